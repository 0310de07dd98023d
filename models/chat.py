"""Chat assembly for sequential revision: the message lists sent to a model at every call.

Owns the reference's `formulate_prompt` logic (spec generalpoints.md §2.6, virl.md §1.6):
- a fresh chat is one user message, `[image, text]` for VL and `[text]` for L;
- it is rebuilt whenever Verify Info is `None` (after reset) or contains `Correct action`
  (V-IRL, after every move); otherwise the model's previous raw reply is appended as an assistant
  turn, then the user turn `You failed this trial because <Verify Info>`;
- the image sits in the first user message only; the full history is kept.

Messages use the Hugging Face content-list layout of the conformance vectors:
`{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "…"}]}`. Images travel
separately (backends receive them in placeholder order), so a message list is plain JSON.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

from .prompts import feedback_text

Message = dict[str, Any]


def text_part(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def user_message(text: str, *, image: bool = False) -> Message:
    """A user message; with `image=True` the image placeholder comes first, then the text."""
    content: list[dict] = [{"type": "image"}] if image else []
    content.append(text_part(text))
    return {"role": "user", "content": content}


def assistant_message(text: str) -> Message:
    return {"role": "assistant", "content": [text_part(text)]}


def copy_message(message: Message) -> Message:
    """A copy of one message sharing nothing mutable with it (`copy.deepcopy` for the layout above,
    several times faster: a findings import copies every episode's chat at every call)."""
    content = message.get("content")
    if not isinstance(content, list):
        return copy.deepcopy(message)
    return {**message, "content": [dict(part) if isinstance(part, dict) and all(isinstance(v, (str, int, float, bool))
                                                                                 or v is None for v in part.values())
                                   else copy.deepcopy(part) for part in content]}


def starts_new_chat(verify_info: str | None) -> bool:
    """Whether the next call gets a fresh chat: Verify Info is None or contains `Correct action`."""
    return verify_info is None or "Correct action" in verify_info


def next_chat(history: Sequence[Message] | None, prompt: str, *, verify_info: str | None,
              last_reply: str | None = None, image: bool = False) -> list[Message]:
    """The message list for the next call (a new list; `history` is not modified).

    `prompt` is the filled template for the *current* state (used only when a fresh chat starts);
    `verify_info` and `last_reply` come from the previous call.
    """
    if history is None or not history or verify_info is None or starts_new_chat(verify_info):
        return [user_message(prompt, image=image)]
    messages = [copy_message(m) for m in history]
    messages.append(assistant_message(last_reply if last_reply is not None else ""))
    messages.append(user_message(feedback_text(verify_info)))
    return messages


def gp_chat(prompt: str, turns: Sequence[tuple[str, str]] = (), *, image: bool = False) -> list[Message]:
    """A GeneralPoints chat: the prompt, then for each failed step (reply, verify_info) the
    assistant reply and the feedback turn. The chat is never reset within a GP episode."""
    messages = [user_message(prompt, image=image)]
    for reply, verify_info in turns:
        messages.append(assistant_message(reply))
        messages.append(user_message(feedback_text(verify_info)))
    return messages


@dataclass
class Conversation:
    """Stateful helper for an episode runner: call `messages_for(prompt)` before each model call
    and `record(reply, verify_info)` after the environment graded it."""

    image: bool = False
    messages: list[Message] = field(default_factory=list)
    _last_reply: str | None = None
    _verify_info: str | None = None

    def messages_for(self, prompt: str) -> list[Message]:
        self.messages = next_chat(self.messages, prompt, verify_info=self._verify_info,
                                  last_reply=self._last_reply, image=self.image)
        return self.messages

    def record(self, reply: str, verify_info: str | None) -> None:
        self._last_reply, self._verify_info = reply, verify_info

    def reset(self) -> None:
        self.messages, self._last_reply, self._verify_info = [], None, None


def count_images(messages: Sequence[Message]) -> int:
    """How many image placeholders a message list holds."""
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for p in m["content"] if p.get("type") == "image")


def flatten_text(message: Message) -> str:
    """The text of one message, its text parts concatenated (image placeholders dropped)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
