"""Side by side: stream the same chat to several backends at once and merge their streams.

Each backend runs in its own task, so a slow, hanging or dead backend never delays another one;
every backend ends with exactly one `Completion` (an error record on failure or on its deadline).
Cancelling the consumer cancels every backend's request.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Mapping, Sequence

from .backends.base import Backend, Completion, TextDelta
from .decoding import DecodingSettings


async def side_by_side(backends: Mapping[str, Backend], messages: Sequence[dict], images: Sequence[Any] = (),
                       settings: Mapping[str, DecodingSettings] | DecodingSettings | None = None, *,
                       deadline_s: float | None = None) -> AsyncIterator[tuple[str, TextDelta | Completion]]:
    """Yield `(name, item)` as items arrive from any backend; each name ends with one `Completion`.

    `settings` is one `DecodingSettings` for all, a per-name mapping, or None (each backend's own).
    `deadline_s` bounds each backend's whole request; past it that backend ends with an error record.
    """
    queue: asyncio.Queue = asyncio.Queue()

    def settings_for(name: str) -> DecodingSettings | None:
        if isinstance(settings, DecodingSettings) or settings is None:
            return settings
        return settings.get(name)

    async def pump(name: str, backend: Backend) -> None:
        start = time.perf_counter()
        text: list[str] = []
        try:
            async with asyncio.timeout(deadline_s):
                async for item in backend.stream(messages, images, settings_for(name)):
                    if isinstance(item, TextDelta):
                        text.append(item.text)
                    await queue.put((name, item))
                    if isinstance(item, Completion):
                        return
        except TimeoutError:
            await queue.put((name, Completion(model=name, text="".join(text), finish_reason="error",
                                              error=f"no complete reply within {deadline_s:g} s",
                                              elapsed_s=time.perf_counter() - start)))

    tasks = [asyncio.create_task(pump(n, b), name=f"side-by-side-{n}") for n, b in backends.items()]
    pending = set(backends)
    try:
        while pending:
            name, item = await queue.get()
            if isinstance(item, Completion):
                pending.discard(name)
            yield name, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def complete_all(backends: Mapping[str, Backend], messages: Sequence[dict], images: Sequence[Any] = (),
                       settings: Mapping[str, DecodingSettings] | DecodingSettings | None = None, *,
                       deadline_s: float | None = None) -> dict[str, Completion]:
    """`side_by_side` run to the end: the final record per backend name."""
    out: dict[str, Completion] = {}
    async for name, item in side_by_side(backends, messages, images, settings, deadline_s=deadline_s):
        if isinstance(item, Completion):
            out[name] = item
    return out
