"""The backend interface: one async streaming call per request, the records it yields, and health.

Every backend implements `stream(messages, images, settings)`, an async generator that yields
`TextDelta`s as text arrives and then exactly one `Completion` (token counts, time to first token,
tokens/s, finish reason). Failures never raise out of `stream`: they end the stream with a
`Completion` whose `error` is a one-line, human-readable message. Cancelling the consuming task
(the user left) stops generation and releases the backend.

`messages` use the content-list layout of `models.chat` (`{"type": "image"}` placeholders);
`images` holds the images for those placeholders, in order (PIL images, numpy arrays or encoded
bytes).
"""
from __future__ import annotations

import abc
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncGenerator, AsyncIterator, Sequence

from ..decoding import PAPER_EVAL, DecodingSettings

Message = dict[str, Any]

# The session (episode) a request belongs to. Backends that talk HTTP send it as SESSION_HEADER so a
# session-sticky or cache-aware router in front of several servers (vllm-router `consistent_hash`
# reads `X-Session-ID` first) sends every turn of an episode to one replica, whose prefix cache
# already holds the growing chat. Set it with `in_session`, never by hand.
SESSION_HEADER = "X-Session-ID"
current_session: ContextVar[str | None] = ContextVar("sftvsrl_session", default=None)


async def in_session(agen: AsyncGenerator, session: str | None) -> AsyncGenerator:
    """Iterate `agen` (e.g. a player's or backend's `stream`) with `current_session` set to
    `session` while each item is produced, and reset before it is handed on — so the value never
    leaks to the consumer, even when several episodes interleave in one task."""
    try:
        while True:
            token = current_session.set(session)
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                return
            finally:
                current_session.reset(token)
            yield item
    finally:
        await agen.aclose()


@dataclass(frozen=True)
class TextDelta:
    """A piece of generated text, in order."""

    text: str


@dataclass
class Completion:
    """The final record of one request. `error` is set (and `finish_reason == "error"`) on failure."""

    model: str
    text: str = ""
    finish_reason: str | None = None      # "stop", "length", "cancelled", "error"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_s: float | None = None
    elapsed_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens over the whole request time (prefill included). Servers may send
        several tokens per chunk, so a rate measured from the first chunk would overstate speed."""
        if not self.completion_tokens or self.elapsed_s <= 0:
            return None
        return self.completion_tokens / self.elapsed_s

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens_per_s"] = self.tokens_per_s
        return data


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
    models: tuple[str, ...] = ()


class Timer:
    """Measures elapsed time and time to first token for one request."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def mark_token(self) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@dataclass(eq=False)  # identity semantics: backends are hashable, compared by object
class Backend(abc.ABC):
    """A named model behind one interface. Subclasses implement `_stream` and `health`."""

    name: str
    settings: DecodingSettings = field(default_factory=lambda: PAPER_EVAL)

    async def stream(self, messages: Sequence[Message], images: Sequence[Any] = (),
                     settings: DecodingSettings | None = None) -> AsyncGenerator[TextDelta | Completion, None]:
        """Yield `TextDelta`s then one `Completion`; never raises (except on cancellation)."""
        timer = Timer()
        final: Completion | None = None
        parts: list[str] = []
        try:
            async for item in self._stream(list(messages), list(images), settings or self.settings, timer):
                if isinstance(item, Completion):
                    final = item
                    break
                parts.append(item.text)
                yield item
        except Exception as exc:  # noqa: BLE001 - errors become a record, never an exception upstream
            final = Completion(model=self.name, text="".join(parts), finish_reason="error",
                               error=describe_error(exc))
        if final is None:
            final = Completion(model=self.name, text="".join(parts), finish_reason="error",
                               error="the backend ended the stream without a final record")
        final.elapsed_s = final.elapsed_s or timer.elapsed()
        if final.time_to_first_token_s is None:
            final.time_to_first_token_s = timer.first
        yield final

    async def complete(self, messages: Sequence[Message], images: Sequence[Any] = (),
                       settings: DecodingSettings | None = None) -> Completion:
        """Run `stream` to the end and return its `Completion`."""
        final = None
        async for item in self.stream(messages, images, settings):
            if isinstance(item, Completion):
                final = item
        assert final is not None
        return final

    @abc.abstractmethod
    def _stream(self, messages: list[Message], images: list[Any], settings: DecodingSettings,
                timer: Timer) -> AsyncIterator[TextDelta | Completion]:
        """Yield deltas (calling `timer.mark_token()`), then a `Completion`. May raise."""

    @abc.abstractmethod
    async def health(self) -> Health:
        """Whether the model can answer now, with a one-line detail. Never raises."""

    async def aclose(self) -> None:  # noqa: B027 - a no-op by default; backends holding resources override it
        """Release connections / threads. Safe to call twice."""


def describe_error(exc: BaseException) -> str:
    """One line for a user: the exception type and its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
