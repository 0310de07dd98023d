"""The episode runner: one async generator per participant yielding typed step events, and the
paired runner that merges several participants' streams on the *same* instance.

Participants all speak the backend protocol of `models.backends.base` — `stream(messages, images)`
yielding `TextDelta`s then one `Completion` — so a model, a person and a replay of stored replies
are interchangeable:
- `ModelPlayer`: a configured backend (bounded by an optional semaphore);
- `HumanPlayer`: waits for `submit(text)` (the API's human endpoint puts text there);
- `ScriptedPlayer`: replies from a list (replays, resumes, tests, benchmarks).

Events are typed dataclasses from here to every reader: the live log (`app.live`), the stored
replays (`app.export`), the SSE endpoints (`app.api.episodes`), the UI's columns and the CLI all
hold these objects and read their attributes. `type` names an event and `to_json()` is its JSON —
the one serialisation, which SSE sends as the event's `data`:
- `started`  — episode_id, group_id, participant, kind, task, instance, info (deal / route facts);
               `replay: true` when a stored episode is replayed
- `prompt`   — episode_id, call, messages (the exact chat sent), n_images
- `waiting`  — episode_id, call (a human player's turn)
- `delta`    — episode_id, call, text
- `step`     — episode_id and the step record (`game.tasks.StepRecord`: call, reward, feedback,
               outcome, graded, terminated, truncated, parsed, exact_correct, float_rejected,
               state (where the task's world stands after the call: V-IRL's walker), output,
               timing) without its prompt
- `finished` — episode_id, status (`finished`/`error`/`interrupted`), success, exact_success,
               n_steps, episode_return, error
Two group events close a group's log (`app.live`) and every SSE stream:
- `error`          — group_id, error (the group's runner failed)
- `group_finished` — group_id; `reason` when the server stopped it, `replay: true` on a replay

Durability: the `step` event is yielded only after `Store.add_step` committed it. A backend error
ends the episode with status `error` (nothing is graded for that call); cancellation marks it
`interrupted`. Grading, budgets and feedback come from the engines via the task registry
(`game.tasks`); a person's move becomes a reply through the task's `person_reply`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, fields, make_dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from models.backends.base import Completion, TextDelta, in_session
from models.chat import Conversation, count_images
from models.decoding import DecodingSettings

from .store import Store, new_id
from game.tasks import Instance, StepRecord, open_session


# ------------------------------------------------------------------------------------------ events
def _unless_unset(default: Any = None) -> Any:
    """An optional field that `to_json` leaves out while it is unset (falsy), so the JSON of the
    events that never set it stays as it was."""
    return field(default=default, metadata={"omit_unset": True})


@dataclass
class Event:
    """Any event of a live log or an SSE stream."""

    @property
    def type(self) -> str:
        """The event's name on the wire (SSE `event:` and the JSON's `type`)."""
        return _EVENT_NAMES[type(self)]

    def to_json(self) -> dict[str, Any]:
        """The event as JSON-ready data: `type`, then its fields in order (optional ones left out
        while unset). A view of the event, not a copy: serialise it, do not change it."""
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            value = getattr(self, f.name)
            if not (f.metadata.get("omit_unset") and not value):
                out[f.name] = value
        return out


@dataclass
class EpisodeEvent(Event):
    """An event of one participant's episode."""

    episode_id: str


@dataclass
class Started(EpisodeEvent):
    group_id: str
    participant: str
    kind: str
    task: str
    instance: dict
    info: dict
    replay: bool = _unless_unset(False)


@dataclass
class PromptSent(EpisodeEvent):
    call: int
    messages: list
    n_images: int


@dataclass
class Waiting(EpisodeEvent):
    call: int


@dataclass
class Delta(EpisodeEvent):
    call: int
    text: str


# The `step` event: the registry's step record (`game.tasks.StepRecord`) without the chat sent,
# which the `prompt` event already carried. Type checkers see the record's fields on it.
if TYPE_CHECKING:
    @dataclass
    class StepDone(StepRecord, EpisodeEvent):
        """One graded call, committed to the store before it is reported (`game.tasks.StepRecord`)."""
else:
    StepDone = make_dataclass("StepDone", [(f.name, f.type, f) for f in fields(StepRecord) if f.name != "prompt"],
                              bases=(EpisodeEvent,))
    StepDone.__doc__ = "One graded call, committed to the store before it is reported (`game.tasks.StepRecord`)."


@dataclass
class Finished(EpisodeEvent):
    status: str
    success: bool | None
    exact_success: bool | None
    n_steps: int
    episode_return: float
    error: str | None = None


@dataclass
class GroupError(Event):
    """The group's runner failed (the server keeps running)."""

    group_id: str
    error: str


@dataclass
class GroupFinished(Event):
    """The last event of a group's log and of every SSE stream."""

    group_id: str
    reason: str | None = _unless_unset()   # why the server stopped it (e.g. nobody watched)
    replay: bool = _unless_unset(False)    # a stored group replayed


_EVENT_NAMES: dict[type, str] = {Started: "started", PromptSent: "prompt", Waiting: "waiting", Delta: "delta",
                                 StepDone: "step", Finished: "finished", GroupError: "error",
                                 GroupFinished: "group_finished"}


# ------------------------------------------------------------------------------------ participants
@dataclass
class ModelPlayer:
    """A model backend as a participant. `limit` bounds its concurrent requests."""

    name: str
    backend: Any
    settings: DecodingSettings | None = None
    limit: asyncio.Semaphore | None = None
    kind: str = "model"

    async def stream(self, messages, images) -> AsyncIterator[TextDelta | Completion]:
        if self.limit is None:
            async for item in self.backend.stream(messages, images, self.settings):
                yield item
            return
        async with self.limit:
            async for item in self.backend.stream(messages, images, self.settings):
                yield item


@dataclass
class HumanPlayer:
    """A person: each call waits for `submit(text)` (formulas or full replies, actions)."""

    name: str = "human"
    kind: str = "human"
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    waiting: bool = False
    idle_timeout_s: float = 1800.0   # an abandoned game ends (status `error`) instead of waiting forever

    def submit(self, text: str) -> None:
        self.queue.put_nowait(str(text))

    async def stream(self, messages, images) -> AsyncIterator[TextDelta | Completion]:
        start = time.perf_counter()
        self.waiting = True
        try:
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` swallows a cancel that lands
            # just after a move arrived (Stop right after a move), and the game ran on for the idle limit
            async with asyncio.timeout(self.idle_timeout_s):
                text = await self.queue.get()
        except TimeoutError:
            yield Completion(model=self.name, finish_reason="error",
                             error=f"no move within {self.idle_timeout_s:g} s: the game was abandoned")
            return
        finally:
            self.waiting = False
        yield Completion(model=self.name, text=text, finish_reason="stop", elapsed_s=time.perf_counter() - start)


@dataclass
class ScriptedPlayer:
    """Replies from a list, in order (an exhausted list answers with an empty reply)."""

    name: str
    replies: Sequence[str]
    kind: str = "scripted"
    _i: int = 0

    async def stream(self, messages, images) -> AsyncIterator[TextDelta | Completion]:
        text = self.replies[self._i] if self._i < len(self.replies) else ""
        self._i += 1
        if text:
            yield TextDelta(text)
        yield Completion(model=self.name, text=text, finish_reason="stop")


# ------------------------------------------------------------------------------------------ runner
def _timing(c: Completion) -> dict:
    return {"elapsed_s": c.elapsed_s, "time_to_first_token_s": c.time_to_first_token_s,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "tokens_per_s": c.tokens_per_s, "finish_reason": c.finish_reason}


async def play(participant, instance: Instance, store: Store, *, group_id: str | None = None,
               episode_id: str | None = None, resume: bool = False, eval_link: dict | None = None,
               settings: dict | None = None, stream_deltas: bool = True) -> AsyncIterator[EpisodeEvent]:
    """Play one episode, yielding events. With `resume=True` and an `episode_id` already in the
    store, its stored replies are replayed into the engine first (no model calls) and play goes on
    from the next call."""
    session = open_session(instance)
    conv = Conversation(image=session.vision)
    group_id = group_id or new_id()
    kind = getattr(participant, "kind", "model")
    prior: list[dict] = []
    if resume and episode_id:
        prior = store.steps(episode_id, prompts=False)
        store.reopen_episode(episode_id)
    else:
        settings = dict(settings or {})
        decoding = getattr(participant, "settings", None)
        if decoding is not None and hasattr(decoding, "to_dict"):
            settings["decoding"] = decoding.to_dict()  # what this model really ran with
        episode_id = store.create_episode(
            group_id=group_id, task=instance.task, instance=instance.to_dict(), instance_key=instance.key,
            participant=participant.name, participant_kind=kind, settings=settings or {},
            episode_id=episode_id, **(eval_link or {}))
    status, error, n_steps = "interrupted", None, len(prior)
    try:
        yield Started(episode_id, group_id, participant.name, kind, instance.task, instance.to_dict(),
                      session.describe())
        for step in prior:  # resume: the engine and the chat catch up with the stored replies
            conv.messages_for(session.prompt())
            result = session.step(step["output"])
            conv.record(step["output"], result.feedback)
        while not session.done:
            call = n_steps + 1
            messages = conv.messages_for(session.prompt())
            n_images = count_images(messages)
            # Rendering and grading are CPU work: off the event loop (the session is ours alone).
            images = [await asyncio.to_thread(session.image)] * n_images if n_images else []
            yield PromptSent(episode_id, call, messages, n_images)
            if kind == "human":
                yield Waiting(episode_id, call)
            final: Completion | None = None
            async for item in in_session(participant.stream(messages, images), episode_id):
                if isinstance(item, Completion):
                    final = item
                elif stream_deltas and item.text:
                    yield Delta(episode_id, call, item.text)
            if final is None or final.error:
                status, error = "error", (final.error if final else "no reply")
                break
            text = instance.spec.person_reply(session, final.text) if kind == "human" else final.text
            result = await asyncio.to_thread(session.step, text)
            conv.record(text, result.feedback)
            step = StepRecord.of(result, text, timing=_timing(final), prompt=messages).to_dict()
            store.add_step(episode_id, step)  # committed before it is reported
            n_steps += 1
            step.pop("prompt")
            yield StepDone(episode_id, **step)
        else:
            status = "finished"
    finally:
        if status == "interrupted":  # cancelled or closed early: keep what was committed
            store.finish_episode(episode_id, status="interrupted")
    success = session.success if status == "finished" else None
    exact = session.exact_success if status == "finished" else None
    store.finish_episode(episode_id, status=status, success=success, exact_success=exact, error=error)
    ep = store.get_episode(episode_id, steps=False)
    yield Finished(episode_id, status, success, exact, n_steps, ep["episode_return"] if ep else 0.0, error)


async def play_paired(participants: Sequence[Any], instance: Instance, store: Store, *,
                      group_id: str | None = None, settings: dict | None = None) -> AsyncIterator[EpisodeEvent]:
    """Play several participants on the same instance concurrently; events are merged in arrival
    order (each participant's own events stay in order). Cancelling the consumer cancels all."""
    group_id = group_id or new_id()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(p) -> None:
        try:
            async for event in play(p, instance, store, group_id=group_id, settings=settings):
                await queue.put(event)
        finally:
            await queue.put(done)

    open_session(instance)  # validate before anything starts
    tasks = [asyncio.create_task(pump(p)) for p in participants]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
                continue
            yield item
        for t in tasks:  # surface errors raised inside a participant
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
