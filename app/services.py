"""The service layer: the one way in for the API, the UI and the CLI. Each operation validates its
input, applies the caps and picks each model's checkpoint for the task, the same way whoever calls:

- `live_instance` / `route_source`: an instance or a V-IRL route set a client may open (over the
  API and the UI, route sources follow the one policy of `app.sources`: bundled sets, the server's
  configured source, directories under the operator's `SFTVSRL_VIRL_DIRS`);
- `model_player`: a configured model as a participant for a task (its per-task checkpoint, its
  decoding merged with any overrides);
- `start_group`: start a live group of participants on one instance, under the fair-use caps of
  `app.access` (per client and in all; `MAX_LIVE_GROUPS` without an access policy, e.g. the CLI);
- `start_evaluation` / `cancel_evaluation`: one evaluation at a time per server (a second: 409),
  resumable, whole or one shard of it; `merge_shards`: the finished shards into one run (see
  `app.shards`).

Operations take the `AppContext` (settings, store, model pool, live groups, running evaluations);
the CLI builds one with `cli_context`. Errors are `ServiceError` (400), `Busy` (429, with
`retry_after`) or `Conflict` (409), with a message shown as is.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from game.tasks import Instance, InstanceError, get_task, open_session, route_data

from . import shards
from .evaluation import EvalConfig, EvalError, create_run, find_resumable, run_evaluation, split_instances
from .runner import ModelPlayer

MAX_LIVE_GROUPS = 64


class ServiceError(ValueError):
    """A refused request (message shown to the user as is)."""

    status = 400


class Busy(ServiceError):
    """The server is at a cap; try again later."""

    status = 429
    retry_after = 30


class Conflict(ServiceError):
    """The request conflicts with the server's state (e.g. an evaluation is already running)."""

    status = 409


def cli_context(settings, store, pool):
    """An app context for a CLI command (no server: live groups and evaluations of this process)."""
    from .live import LiveRegistry
    from .main import AppContext

    return AppContext(settings, store, pool, LiveRegistry(store))


# ------------------------------------------------------------------------------- instances
def check_source(ctx, source: str) -> str:
    """The route-source policy (`app.sources.check_source`) for clients of this server."""
    from .sources import SourceRefused
    from .sources import check_source as policy

    try:
        return policy(source, ctx.settings)
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


# ----------------------------------------------------------------------------- live groups
async def start_group(ctx, instance: Instance, participants: list, settings: dict | None = None,
                      client: str = ""):
    """Start `participants` on `instance` in the background (a `LiveGroup`), under the live caps
    (`client` is the caller's address for the per-client cap)."""
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise ServiceError("a participant appears twice (give humans distinct names)")
    if not participants:
        raise ServiceError("name at least one participant")
    access = getattr(ctx, "access", None)
    if access is not None:
        # An empty `client` (the in-process UI, which cannot tell visitors apart here) is held to
        # the global cap only.
        problem = access.capacity_problem(ctx.live.running(), ctx.live.running(client) if client else 0)
        if problem:
            raise Busy(problem)
    elif ctx.live.running() >= MAX_LIVE_GROUPS:
        raise Busy(f"{ctx.live.running()} games are running; try again when one ends")
    group = await ctx.live.start(participants, instance, settings, client=client)
    if group.error and not group.episode_ids:
        raise ServiceError(group.error)
    return group


# ----------------------------------------------------------------------------- evaluations
def start_evaluation(ctx, config: EvalConfig, *, resume: bool | str = False,
                     on_progress: Callable[[int, int], None] | None = None,
                     shard: tuple[int, int] | None = None) -> tuple[str, asyncio.Task]:
    """Start (or with `resume` — True for the latest run with the same settings, or a run id —
    continue) an evaluation in the background: every model plays the task's checkpoint. With
    `shard=(i, N)`, only shard i of N of it (resumed per shard). One evaluation runs at a time per
    server. Returns the run id and its asyncio task."""
    for m in config.models:
        model_player(ctx, m, config.task)  # validates the name and the task
    if any(not t.done() for t in ctx.evals.values()):
        raise Conflict("an evaluation is already running on this server; wait for it or cancel it")
    try:
        shard = shards.check_shard(*shard) if shard is not None else None
        for split in config.split_objs():  # resolve the instances now: bad sources fail before any call
            split_instances(config, split)
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
    overrides = {"max_tokens": config.max_tokens} if config.max_tokens else None

    def player(name: str) -> ModelPlayer:
        return model_player(ctx, name, config.task, overrides)

    job = asyncio.get_running_loop().create_task(
        run_evaluation(ctx.store, player, config, run_id=run_id, on_progress=on_progress, shard=shard))
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


def cancel_evaluation(ctx, run_id: str) -> None:
    job = ctx.evals.get(run_id)
    if job is None or job.done():
        raise ServiceError("this evaluation is not running on this server")
    job.cancel()
