"""The service layer: the one way in for the API, the UI and the CLI, and the one place every
policy is applied. Each operation takes the `AppContext` and (where who asks matters) the `Caller`
(`app.access`: the API builds it from a request, the UI from the page's request and the game tokens
the page keeps, the CLI is the operator), validates its input and applies the rules the same way
whoever calls:

- `live_instance` / `route_source`: an instance or a V-IRL route set a client may open (over the
  API and the UI, route sources follow the one policy of `app.sources`: bundled sets, the server's
  configured source, directories under the operator's `SFTVSRL_VIRL_DIRS`);
- `compute`: CPU work for a caller (`app.workers`: inline when cheap, else the fair pool under
  its time limit; a timeout or a lost worker is `Unavailable`, 503 with `Retry-After`);
- `model_player`: a configured model as a participant for a task (its per-task checkpoint, its
  decoding merged with any overrides); `model_where`: where a model runs, as the caller may see it;
- `start_group`: start a live group of participants on one instance, under the fair-use caps of
  `app.access` (per client and in all; `MAX_LIVE_GROUPS` without an access policy, e.g. the CLI);
  `game_token`; `submit_move` / `cancel_game` (the game's token); `open_stream` (a live or stored
  group's events, readable by the caller);
- `readable_episode`, `list_episodes`, `visible_scope`: stored episodes the caller may read (its own
  games and evaluation episodes, or everything with the gallery or the operator token);
  `export_episodes`: bulk export (operator-only on a public server);
- `start_evaluation` / `cancel_evaluation`: operator-only on a public server, bounded in size
  (`app.evaluation.MAX_EPISODES_PER_SPLIT`), instance lists built off the event loop; one
  evaluation at a time per server (a second: 409), resumable, whole or one shard of it;
  `merge_shards`: the finished shards into one run (see `app.shards`).

The CLI builds a context with `cli_context` and calls as `access.CLI`. Errors are `ServiceError`
(400), `Forbidden` (403), `NotFound` (404), `Conflict` (409), `Busy` (429) or `Unavailable` (503),
the last two with `retry_after`; their message is shown as is.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from game.tasks import Instance, InstanceError, get_task, open_session, route_data

from . import shards
from .access import CLI, Caller  # noqa: F401 - callers of the service layer name who asks with these
from .context import AppContext
from .evaluation import EvalConfig, EvalError, create_run, find_resumable, run_evaluation, run_items
from .live import LiveRegistry
from .runner import ModelPlayer
from .sources import SourceRefused, check_source as source_policy
from .workers import PoolBusy, WorkerUnavailable, WorkTimeout, shared_pool

MAX_LIVE_GROUPS = 64


class ServiceError(ValueError):
    """A refused request (message shown to the user as is)."""

    status = 400


class Forbidden(ServiceError):
    """The caller may not do this (e.g. another visitor's game, an operator-only action)."""

    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    """The request conflicts with the server's state (e.g. an evaluation is already running)."""

    status = 409


class Busy(ServiceError):
    """The server is at a cap; try again later."""

    status = 429
    retry_after = 30


class Unavailable(ServiceError):
    """The work could not be done now (it ran past the time limit, or its worker stopped)."""

    status = 503
    retry_after = 5


GAME_TOKEN_NEEDED = "this game needs its token (X-Game-Token header or ?token=, as returned when the game was started)"


def cli_context(settings, store, pool):
    """An app context for a CLI command (no server: live groups and evaluations of this process)."""
    return AppContext(settings, store, pool, LiveRegistry(store))


# ------------------------------------------------------------------------------- instances
def check_source(ctx, source: str) -> str:
    """The route-source policy (`app.sources.check_source`) for clients of this server."""
    try:
        return source_policy(source, ctx.settings)
    except SourceRefused as exc:
        raise ServiceError(str(exc)) from None


def route_source(ctx, source: str | None = None):
    """The V-IRL route set `source` (default: the server's), opened once per process."""
    try:
        return route_data(check_source(ctx, source or ctx.settings.virl_source))
    except InstanceError as exc:
        raise ServiceError(str(exc)) from None


def live_instance(ctx, task: str, params: dict) -> Instance:
    """A validated instance for a live game; V-IRL instances default to the server's source."""
    try:
        spec = get_task(task)
        params = dict(params or {})
        if "source" in spec.config_type.__dataclass_fields__:  # a V-IRL route set
            params.setdefault("source", ctx.settings.virl_source)
            check_source(ctx, str(params["source"]))
        instance = Instance(task, params)
        open_session(instance)
    except InstanceError as exc:
        raise ServiceError(str(exc)) from None
    return instance


# ---------------------------------------------------------------------------------- CPU work
def _cpu_error(exc: Exception) -> ServiceError:
    if isinstance(exc, PoolBusy):
        busy = Busy(str(exc))
        busy.retry_after = 5
        return busy
    if isinstance(exc, (WorkTimeout, WorkerUnavailable)):
        return Unavailable(str(exc))
    return ServiceError(str(exc))


def _workers(ctx):
    return getattr(ctx, "workers", None) or shared_pool()


async def compute(ctx, caller: Caller, fn: Callable, *args):
    """`fn(*args)` (an `app.jobs` computation) for `caller`: inline when cheap, else in the fair
    worker pool under its time limit. Bad input is a `ServiceError`; a timeout or a lost worker
    `Unavailable` (503); too many of the caller's computations waiting `Busy` (429)."""
    try:
        return await _workers(ctx).compute(fn, *args, client=caller.client)
    except (ValueError, PoolBusy, WorkTimeout, WorkerUnavailable) as exc:
        raise _cpu_error(exc) from None


def compute_sync(ctx, caller: Caller, fn: Callable, *args):
    """`compute` for a thread (the UI's handlers)."""
    try:
        return _workers(ctx).compute_sync(fn, *args, client=caller.client)
    except (ValueError, PoolBusy, WorkTimeout, WorkerUnavailable) as exc:
        raise _cpu_error(exc) from None


# --------------------------------------------------------------------------------- players
def model_player(ctx, name: str, task: str, overrides: dict | None = None) -> ModelPlayer:
    """Model `name` as a participant playing `task`: its checkpoint for the task, its decoding
    merged with `overrides` (e.g. `{"max_tokens": 64}`)."""
    pool = ctx.pool
    if name not in pool.names:
        raise ServiceError(f"unknown model {name!r}; configured: {', '.join(pool.names) or 'none'}"
                           + (f" ({pool.error})" if pool.error else ""))
    spec = pool.spec(name)
    if not spec.supports(task):
        raise ServiceError(f"model {name!r} is not configured for {task} (tasks: {', '.join(spec.tasks)})")
    decoding = spec.decoding.merged(overrides) if overrides else None
    return pool.player(name, decoding, task=task)


def public_text(ctx, caller: Caller, text: str) -> str:
    """`text` as `caller` may see it: a public server shows no absolute paths without the operator token."""
    return ctx.access.public_text(caller, text) if ctx.access is not None and text else text


def model_where(ctx, caller: Caller, name: str) -> str:
    """Where model `name` runs (checkpoint paths or server URL), as `caller` may see it."""
    return public_text(ctx, caller, ctx.pool.spec(name).where)


def models_source(ctx, caller: Caller) -> str:
    """The models file the server read, as `caller` may see it."""
    return public_text(ctx, caller, ctx.pool.config.source if ctx.pool.config else "")


# ----------------------------------------------------------------------------- live groups
async def start_group(ctx, caller: Caller, instance: Instance, participants: list, settings: dict | None = None):
    """Start `participants` on `instance` in the background (a `LiveGroup`), under the live caps
    (per caller address and in all). `game_token(ctx, group.group_id)` is its capability."""
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise ServiceError("a participant appears twice (give humans distinct names)")
    if not participants:
        raise ServiceError("name at least one participant")
    access = getattr(ctx, "access", None)
    if access is not None:
        problem = access.capacity_problem(ctx.live.running(), ctx.live.running(caller.client))
        if problem:
            raise Busy(problem)
    elif ctx.live.running() >= MAX_LIVE_GROUPS:
        raise Busy(f"{ctx.live.running()} games are running; try again when one ends")
    group = await ctx.live.start(participants, instance, settings, client=caller.client)
    if group.error and not group.episode_ids:
        raise ServiceError(group.error)
    return group


def game_token(ctx, group_id: str) -> str:
    """The capability that plays, cancels and reads group `group_id` (see `app.access`)."""
    return ctx.access.game_token(group_id) if ctx.access is not None else ""


def _may_play(ctx, caller: Caller, group_id: str) -> bool:
    return ctx.access is None or ctx.access.may_play(caller, group_id)


def may_read(ctx, caller: Caller, episode: dict) -> bool:
    """Whether `caller` may read `episode` (a stored or live episode, or a group as
    `{"group_id": …, "eval_run_id": None}`)."""
    return ctx.access is None or ctx.access.may_read(caller, episode)


def submit_move(ctx, caller: Caller, episode_id: str, text: str) -> None:
    """A human player's move in a live game (needs the game's token)."""
    ep = ctx.store.get_episode(episode_id, steps=False)
    if ep is None:
        raise NotFound("episode not found")
    if not _may_play(ctx, caller, ep["group_id"]):
        raise Forbidden(GAME_TOKEN_NEEDED)
    human = ctx.live.human(episode_id)
    if human is None or ep["status"] != "running":
        raise ServiceError(f"this episode has no live human player (status {ep['status']}, "
                           f"played by {ep['participant_kind']})")
    if not human.queue.empty():
        raise ServiceError("a move is already pending: wait for its 'step' event")
    human.submit(text)


def cancel_game(ctx, caller: Caller, episode_id: str) -> None:
    """Stop the running group of `episode_id` (needs the game's token)."""
    group = ctx.live.group_of(episode_id)
    if group is None or group.done:
        raise ServiceError("no running episode with this id")
    if not _may_play(ctx, caller, group.group_id):
        raise Forbidden(GAME_TOKEN_NEEDED)
    group.task.cancel()


@dataclass
class Stream:
    """What an event stream serves: a live group, or the stored episodes of a finished one."""

    group_id: str
    live: Any                      # a `LiveGroup` while it is in memory, else None
    episode_ids: list[str]         # stored episodes to replay when not live


def open_stream(ctx, caller: Caller, *, group_id: str | None = None, episode_id: str | None = None) -> Stream:
    """The events of a group (or of one episode) that `caller` may read, live or stored."""
    if episode_id is not None:
        ep = ctx.store.get_episode(episode_id, steps=False)
        if ep is None:
            raise NotFound("episode not found")
        if not may_read(ctx, caller, ep):
            raise Forbidden(GAME_TOKEN_NEEDED)
        return Stream(ep["group_id"], ctx.live.group_of(episode_id), [episode_id])
    assert group_id is not None, "give a group or an episode"
    group = ctx.live.group(group_id)
    if group is not None:
        if not may_read(ctx, caller, {"group_id": group_id, "eval_run_id": None}):
            raise Forbidden(GAME_TOKEN_NEEDED)
        return Stream(group_id, group, list(group.episode_ids))
    eps = ctx.store.list_episodes(group_id=group_id, limit=64)
    if not eps:
        raise NotFound("group not found")
    if not all(may_read(ctx, caller, e) for e in eps):
        raise Forbidden(GAME_TOKEN_NEEDED)
    return Stream(group_id, None, [e["id"] for e in eps])


# --------------------------------------------------------------------------- stored episodes
def readable_episode(ctx, caller: Caller, episode_id: str, *, steps: bool = True, prompts: bool = False) -> dict:
    """One stored episode `caller` may read (`NotFound` / `Forbidden` otherwise)."""
    ep = ctx.store.get_episode(str(episode_id)[:128], steps=steps, prompts=prompts)
    if ep is None:
        raise NotFound("episode not found")
    if not may_read(ctx, caller, ep):
        raise Forbidden("this episode is another visitor's game: only its player (who holds its token) "
                        "can open it on this server")
    return ep


def visible_scope(ctx, caller: Caller) -> set[str] | None:
    """The store's `visible_groups` filter for `caller`: None (everything), or its own games'
    group ids (listings then also show evaluation episodes)."""
    return None if ctx.access is None else ctx.access.listing_scope(caller)


def list_episodes(ctx, caller: Caller, *, limit: int = 50, offset: int = 0, **filters) -> list[dict]:
    """Stored episodes `caller` may see, filtered (see `Store.list_episodes`)."""
    return ctx.store.list_episodes(limit=limit, offset=offset, visible_groups=visible_scope(ctx, caller), **filters)


def may_bulk_export(ctx, caller: Caller) -> bool:
    return ctx.access is None or ctx.access.operator_problem(caller, "bulk export") is None


def export_episodes(ctx, caller: Caller, *, limit: int = 1000, **filters) -> list[dict]:
    """Episodes (with steps) for a bulk export: operator-only on a public server."""
    problem = None if ctx.access is None else ctx.access.operator_problem(caller, "bulk export")
    if problem:
        raise Forbidden(problem)
    rows = ctx.store.list_episodes(limit=limit, visible_groups=visible_scope(ctx, caller), **filters)
    return [ep for ep in (ctx.store.get_episode(e["id"]) for e in rows) if ep is not None]


# ----------------------------------------------------------------------------- evaluations
def require_operator(ctx, caller: Caller, what: str) -> None:
    """Refuse (`Forbidden`) an operator-only action on a public server without the operator token."""
    problem = None if ctx.access is None else ctx.access.operator_problem(caller, what)
    if problem:
        raise Forbidden(problem)


async def start_evaluation(ctx, caller: Caller, config: EvalConfig, *, resume: bool | str = False,
                           on_progress: Callable[[int, int], None] | None = None,
                           shard: tuple[int, int] | None = None) -> tuple[str, asyncio.Task]:
    """Start (or with `resume` — True for the latest run with the same settings, or a run id —
    continue) an evaluation in the background: every model plays the task's checkpoint. With
    `shard=(i, N)`, only shard i of N of it (resumed per shard). Operator-only on a public server;
    one evaluation runs at a time per server; its size is bounded by `EvalConfig`, and its instance
    lists are built in a thread (never on the event loop). Returns the run id and its asyncio task."""
    require_operator(ctx, caller, "starting an evaluation")
    for m in config.models:
        model_player(ctx, m, config.task)  # validates the name and the task
    if any(not t.done() for t in ctx.evals.values()):
        raise Conflict("an evaluation is already running on this server; wait for it or cancel it")
    placeholder = asyncio.get_running_loop().create_future()   # holds the one slot while instances are built
    ctx.evals["(starting)"] = placeholder
    try:
        try:
            shard = shards.check_shard(*shard) if shard is not None else None
            # resolve the instances now, off the loop: bad sources fail before any call
            items = await asyncio.to_thread(run_items, config, shard)
        except (InstanceError, shards.ShardError) as exc:
            raise ServiceError(str(exc)) from None
        prior = None
        if resume:
            prior = ctx.store.get_run(resume) if isinstance(resume, str) else find_resumable(ctx.store, config, shard)
            if prior is None and isinstance(resume, str):
                raise ServiceError(f"no evaluation run {resume}")
            if prior is not None and prior["config"]["task"] != config.task:
                raise ServiceError(f"run {prior['id']} is a {prior['config']['task']} run")
            if prior is not None and prior["config"].get("shard") != (list(shard) if shard else None):
                what = "shard {}/{}".format(*prior["config"]["shard"]) if prior["config"].get("shard") else "not a shard"
                raise ServiceError(f"run {prior['id']} is {what}; pass the same shard")
        run_id = prior["id"] if prior else create_run(ctx.store, config, shard)
    finally:
        ctx.evals.pop("(starting)", None)
        placeholder.cancel()
    overrides = {"max_tokens": config.max_tokens} if config.max_tokens else None

    def player(name: str) -> ModelPlayer:
        return model_player(ctx, name, config.task, overrides)

    job = asyncio.get_running_loop().create_task(
        run_evaluation(ctx.store, player, config, run_id=run_id, on_progress=on_progress, shard=shard, items=items))
    job.add_done_callback(lambda t: t.cancelled() or t.exception())
    ctx.evals[run_id] = job
    return run_id, job


def merge_shards(ctx, run_ids: list[str] | None = None, *, config: EvalConfig | None = None,
                 count: int | None = None) -> str:
    """Merge the finished shard runs `run_ids` — or the latest run of each of `count` shards of
    `config` — into one run whose table is the unsharded run's; returns its id."""
    try:
        if not run_ids:
            if config is None or not count:
                raise ServiceError("name the shard runs to merge, or the evaluation and its number of shards")
            shards.check_shard(0, count)
            run_ids = []
            for i in range(count):
                run = find_resumable(ctx.store, config, (i, count))
                if run is None:
                    raise ServiceError(f"no run of shard {i}/{count} of this evaluation")
                run_ids.append(run["id"])
        return shards.merge_shards(ctx.store, run_ids)
    except (shards.ShardError, EvalError) as exc:
        raise ServiceError(str(exc)) from None


def cancel_evaluation(ctx, caller: Caller, run_id: str) -> None:
    """Stop a running evaluation (operator-only on a public server); it can be resumed later."""
    require_operator(ctx, caller, "cancelling an evaluation")
    job = ctx.evals.get(run_id)
    if job is None or job.done():
        raise ServiceError("this evaluation is not running on this server")
    job.cancel()
