"""Live state of a running app: the model pool (configured backends, one bounded semaphore per
model) and the registry of running episode groups whose events SSE clients subscribe to.

A `LiveGroup` runs `runner.play_paired` in a background task and appends every event to an
in-memory log — the runner's typed events as they are (`app.runner.Event`), closed by a typed
`GroupError` / `GroupFinished`; serialising them is SSE's business (`Event.to_json`). Subscribers
read the log from any index (SSE `Last-Event-ID`) and wait for more.
Finished groups stay in memory for a while (`keep`), after which the API replays them from the
store instead. Human players of a group are reachable by episode id for `submit`.

A group without human players that nobody watches (no SSE subscriber) for `unwatched_s` seconds
is cancelled: its episodes are stored `interrupted` with what they committed. The watchdog waits
on subscribe/unsubscribe events (no polling), so `unwatched_s=0` cancels at once — which is how
the tests drive it.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator

from models.chat import Conversation
from models.config import ConfigError, ModelsConfig, load_config

from .runner import EpisodeEvent, Event, GroupError, GroupFinished, HumanPlayer, ModelPlayer, Started, play_paired
from .store import Store, new_id
from game.tasks import Instance, get_task, open_session


class ModelPool:
    """Backends for the configured models, created on first use and shared by API and eval.

    Warm start (`warm`, run by `sftvsrl serve` as the server starts): the default models' in-process
    checkpoints are loaded and each answers one short warm-up request, so the first Run is as fast
    as a later one; `state(name, task)` says where a model's checkpoint stands meanwhile."""

    def __init__(self, config: ModelsConfig | None, concurrency: int = 4, error: str | None = None) -> None:
        self.config = config
        self.error = error
        self.concurrency = max(1, int(concurrency))
        self._backends: dict[tuple, Any] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._warming: dict[tuple, str] = {}     # backend key -> "loading" / "failed: why" while warming
        # What the landing page plays first, per task (set by the UI): the warm-up plays it, so the
        # first Run finds its prompt in the model's prefix cache like any later Run.
        self.warm_instances: dict[str, Instance] = {}
        self._create = threading.Lock()

    @classmethod
    def from_file(cls, path: str | None, concurrency: int = 4) -> "ModelPool":
        try:
            return cls(load_config(path), concurrency)
        except ConfigError as exc:
            return cls(None, concurrency, str(exc))

    @property
    def names(self) -> list[str]:
        return list(self.config.models) if self.config else []

    def spec(self, name: str):
        if self.config is None:
            raise ConfigError(self.error or "no model configuration")
        return self.config[name]

    @property
    def defaults(self) -> list[str]:
        """The models a page ticks by default and the server warms at start: `sft` and `rl` when
        configured, else the first two."""
        names = self.names
        return [n for n in ("sft", "rl") if n in names] or names[:2]

    def _key(self, name: str, task: str | None) -> tuple:
        spec = self.spec(name)
        return (name, spec.path_for(task) if spec.paths else None)

    def backend(self, name: str, task: str | None = None):
        """The model's backend for `task` (a local model with per-task `paths` has one backend per
        checkpoint; every other model one backend for all tasks)."""
        key = self._key(name, task)
        with self._create:   # the warm-up creates backends too
            if key not in self._backends:
                self._backends[key] = self.spec(name).make_backend(task)
            return self._backends[key]

    def state(self, name: str, task: str | None = None) -> str:
        """Where `name`'s checkpoint for `task` stands: `ready` (loaded, or a server), `loading`
        (being warmed now), `cold` (an in-process checkpoint that loads on first use) or
        `failed: why` (the warm-up failed; a run reports the error in its column)."""
        try:
            key = self._key(name, task)
        except ConfigError:
            return "failed: not configured"
        warming = self._warming.get(key)
        backend = self._backends.get(key)
        loaded = getattr(backend, "loaded", None) if backend is not None else None
        if warming is not None and not (warming.startswith("failed") and loaded):   # a later run may load it
            return warming
        if backend is not None and loaded is not False:
            return "ready"
        return "cold" if self.spec(name).backend == "local" else "ready"

    async def warm(self, names: list[str] | None = None) -> None:
        """Load the in-process checkpoints of `names` (default: `defaults`) for every task they serve,
        one after another, and have each answer one short request (the first generation of a freshly
        loaded model is several times slower than the next). Failures are kept in `state`."""
        todo = []
        for name in (self.defaults if names is None else names):
            spec = self.spec(name)
            if spec.backend != "local":
                continue
            for task, _ in spec.checkpoint_tasks():
                task = task or spec.tasks[0]
                key = self._key(name, task)
                if key not in self._warming and not getattr(self._backends.get(key), "loaded", False):
                    self._warming[key] = "loading"
                    todo.append((name, task, key))
        for name, task, key in todo:
            try:
                backend = self.backend(name, task)
                await asyncio.to_thread(backend.load)
                spec = get_task(task)
                session = open_session(self.warm_instances.get(task) or spec.instances(spec.split_names[0], 1)[0])
                messages = Conversation(image=session.vision).messages_for(session.prompt())
                done = await backend.complete(messages, [session.image()] if session.vision else [],
                                              replace(self.spec(name).decoding, max_tokens=4))
                self._warming[key] = f"failed: {done.error}" if done.error else "ready"
            except Exception as exc:  # noqa: BLE001 - kept for `state`; a run reports its own error
                self._warming[key] = f"failed: {exc or type(exc).__name__}"
            if self._warming.get(key) == "ready":
                del self._warming[key]

    def player(self, name: str, settings=None, task: str | None = None) -> ModelPlayer:
        """A participant for `name` playing `task` (pass the task: it picks the checkpoint)."""
        spec = self.spec(name)
        limit = self._limits.setdefault(name, asyncio.Semaphore(self.concurrency))
        return ModelPlayer(name, self.backend(name, task), settings or spec.decoding, limit)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until in-process generations have stopped (their threads must not outlive the
        interpreter: torch aborts the process when a generating thread is still alive at exit)."""
        for b in self._backends.values():
            wait = getattr(b, "wait_idle", None)
            if wait is not None:
                wait(timeout)
        for t in threading.enumerate():  # generation threads that had not taken the model lock yet
            if t.name.startswith("generate-") and t is not threading.current_thread():
                t.join(timeout)

    async def aclose(self) -> None:
        for b in self._backends.values():
            await b.aclose()
        self._backends.clear()


@dataclass
class LiveGroup:
    group_id: str
    instance: Instance
    episode_ids: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    done: bool = False
    finished_at: float | None = None
    humans: dict[str, HumanPlayer] = field(default_factory=dict)
    task: asyncio.Task | None = None
    watchdog: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    client: str = ""                      # who started it (fair-use caps)
    watchers: int = 0                     # SSE subscribers right now
    watch_changed: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None        # why the server cancelled it (e.g. nobody watched)

    def _append(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()

    def _watch_change(self, delta: int) -> None:
        self.watchers += delta
        self.watch_changed.set()
        self.watch_changed = asyncio.Event()

    async def subscribe(self, after: int = 0, episode_id: str | None = None,
                        ping_s: float = 15.0) -> AsyncIterator[tuple[int, Event | None]]:
        """Yield (index, typed event) from index `after` on until the group is done; (index, None)
        every `ping_s` seconds without events (a keep-alive for SSE, and a disconnect check).
        `after` is an SSE `Last-Event-ID`: 0..len(events) (the caller validates it)."""
        i = max(0, min(int(after), len(self.events)))
        self._watch_change(+1)
        try:
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if episode_id is None or isinstance(ev, GroupFinished) or (
                            isinstance(ev, EpisodeEvent) and ev.episode_id == episode_id):
                        yield i, ev
                if self.done:
                    return
                try:
                    async with asyncio.timeout(ping_s):   # (not wait_for: it can swallow a cancel on 3.11)
                        await self.changed.wait()
                except TimeoutError:
                    yield i, None
        finally:
            self._watch_change(-1)


class LiveRegistry:
    def __init__(self, store: Store, keep: int = 256, unwatched_s: float | None = 60.0) -> None:
        self.store = store
        self.keep = keep
        self.unwatched_s = unwatched_s
        self.groups: OrderedDict[str, LiveGroup] = OrderedDict()
        self.by_episode: dict[str, str] = {}

    def group(self, group_id: str) -> LiveGroup | None:
        return self.groups.get(group_id)

    def group_of(self, episode_id: str) -> LiveGroup | None:
        gid = self.by_episode.get(episode_id)
        return self.groups.get(gid) if gid else None

    def human(self, episode_id: str) -> HumanPlayer | None:
        g = self.group_of(episode_id)
        return g.humans.get(episode_id) if g else None

    def running(self, client: str | None = None) -> int:
        return sum(1 for g in self.groups.values() if not g.done and (client is None or g.client == client))

    async def start(self, participants: list, instance: Instance, settings: dict | None = None,
                    client: str = "") -> LiveGroup:
        """Start a group in the background; returns once every participant's episode exists."""
        group = LiveGroup(new_id(), instance, client=client)
        self.groups[group.group_id] = group
        humans = {p.name: p for p in participants if isinstance(p, HumanPlayer)}
        n = len(participants)

        async def run() -> None:
            try:
                async for event in play_paired(participants, instance, self.store, group_id=group.group_id,
                                               settings=settings):
                    if isinstance(event, Started):
                        group.episode_ids.append(event.episode_id)
                        self.by_episode[event.episode_id] = group.group_id
                        if event.participant in humans:
                            group.humans[event.episode_id] = humans[event.participant]
                        if len(group.episode_ids) == n:
                            group.started.set()
                    group._append(event)
            except Exception as exc:  # noqa: BLE001 - reported as an event, the server keeps running
                group.error = f"{type(exc).__name__}: {exc}"
                group._append(GroupError(group.group_id, group.error))
            finally:
                group.done = True
                group.finished_at = time.time()
                group.started.set()
                group._append(GroupFinished(group.group_id, reason=group.stop_reason))
                group._watch_change(0)  # wakes the watchdog
                self._evict()

        group.task = asyncio.create_task(run())
        await group.started.wait()
        if not humans and self.unwatched_s is not None and not group.done:
            group.watchdog = asyncio.create_task(self._watchdog(group))
        return group

    async def _watchdog(self, group: LiveGroup) -> None:
        """Cancel a model-only group once nobody has watched it for `unwatched_s` seconds."""
        while not group.done:
            changed = group.watch_changed
            if group.watchers > 0:
                await changed.wait()
                continue
            try:
                async with asyncio.timeout(self.unwatched_s):
                    await changed.wait()
            except TimeoutError:
                if group.watchers == 0 and not group.done and group.task is not None:
                    group.stop_reason = f"nobody watched this game for {self.unwatched_s:g} s"
                    group.task.cancel()
                return

    def _evict(self) -> None:
        finished = [g for g in self.groups.values() if g.done]
        for g in finished[: max(0, len(finished) - self.keep)]:
            self.groups.pop(g.group_id, None)
            for eid in g.episode_ids:
                self.by_episode.pop(eid, None)

    async def shutdown(self) -> None:
        tasks = [t for g in self.groups.values() for t in (g.task, g.watchdog) if t and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
