"""Sharded evaluation: one evaluation spread over several processes or machines, merged into one run.

A shard `i/N` (0 <= i < N) plays the items at positions i, i+N, i+2N, ... of the evaluation's
deterministic item list (`app.evaluation.run_items`: every split's protocol instances in order, the
list the unsharded run plays, sliced by `game.protocol.shard`), for every model — so each shard is
paired, and the N shards together play exactly the unsharded run's items. A shard is an ordinary
evaluation run (its own run key: resume works per shard) whose config records `"shard": [i, N]`;
`app.services.start_evaluation(..., shard=(i, N))` starts or resumes one.

`merge_shards` checks that the runs are the N shards of one configuration, all finished, then
moves their episodes into one new run with the unsharded configuration in a single transaction:
its summary, table and plot are those of the unsharded run. The shard runs are kept, marked
`merged`, with a pointer to the merged run.
"""
from __future__ import annotations

import re
from typing import Sequence

from .evaluation import EvalConfig, create_run, summarize
from .store import Store


class ShardError(ValueError):
    """A bad shard spec or a set of runs that are not the shards of one evaluation."""


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/N"` → (i, N), 0 <= i < N (e.g. `--shard $SLURM_PROCID/$SLURM_NTASKS`)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ShardError(f"--shard takes i/N (e.g. 0/3), got {text!r}")
    return check_shard(int(m.group(1)), int(m.group(2)))


def check_shard(i: int, n: int) -> tuple[int, int]:
    """(i, N) when it names a shard: 0 <= i < N <= 10000; else ShardError."""
    if not 1 <= n <= 10000 or not 0 <= i < n:
        raise ShardError(f"shard {i}/{n}: need 0 <= i < N (shards are numbered from 0) and N <= 10000")
    return i, n


def merge_shards(store: Store, run_ids: Sequence[str]) -> str:
    """Merge the finished shard runs `run_ids` (all N shards of one configuration) into a new run;
    returns its id. Raises ShardError with a clear message otherwise."""
    if not run_ids:
        raise ShardError("name the shard runs to merge")
    runs = []
    for rid in dict.fromkeys(run_ids):
        run = store.get_run(rid)
        if run is None:
            raise ShardError(f"no evaluation run {rid!r}")
        if not run["config"].get("shard"):
            raise ShardError(f"run {rid} is not a shard (run with --shard i/N)")
        runs.append(run)
    bases = {_unsharded(r).key for r in runs}
    if len(bases) != 1:
        raise ShardError("these runs are shards of different evaluations (task, models, splits, episodes, "
                         "seed or max_tokens differ)")
    n = runs[0]["config"]["shard"][1]
    if any(r["config"]["shard"][1] != n for r in runs):
        raise ShardError("these runs split the evaluation into different numbers of shards")
    have = sorted(r["config"]["shard"][0] for r in runs)
    if have != list(range(n)):
        missing = sorted(set(range(n)) - set(have))
        raise ShardError(f"need all {n} shards exactly once; missing {missing}" if missing
                         else f"a shard is named twice: {have}")
    for r in runs:
        if r["status"] != "finished":
            i = r["config"]["shard"][0]
            raise ShardError(f"shard {i}/{n} (run {r['id']}) is {r['status']} at {r['done']}/{r['total']}: "
                             f"finish it first (sftvsrl eval ... --shard {i}/{n} --resume)")
    config = _unsharded(runs[0])
    total = sum(r["total"] for r in runs)
    merged = create_run(store, config, total=total)
    store.move_run_episodes([r["id"] for r in runs], merged)
    summary = summarize(store, merged)
    store.update_run(merged, status="finished" if not summary["errors"] else "incomplete",
                     done=total - summary["errors"], summary=summary)
    return merged


def _unsharded(run: dict) -> EvalConfig:
    """The configuration a shard run is a shard of."""
    return EvalConfig(**{k: v for k, v in run["config"].items() if k != "shard"})
