"""Sharded evaluation (app.shards): N shards (`game.protocol.shard` of the run's items) partition the
unsharded run's items, resume per shard, and merge into one run whose table is the unsharded run's —
in-process on both store backends, through the service layer, and end to end through
`sftvsrl eval --shard i/N` and `sftvsrl eval merge` with the tiny checkpoint."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from app import services
from app.cli import main as sftvsrl
from app.evaluation import EvalConfig, create_run, find_resumable, markdown_table, run_evaluation, run_items, summarize
from app.runner import ScriptedPlayer
from app.shards import ShardError, merge_shards, parse_shard
from models.backends.base import Completion
from test_app_eval import Solver

ROOT = Path(__file__).resolve().parents[1]


class Picky(Solver):
    """Solves a hand only when its first card is a 2..9 (a per-instance mix of successes),
    and fails with a model error while `broken` (for resume)."""

    broken = False

    async def stream(self, messages, images):
        text = messages[0]["content"][-1]["text"]
        if Picky.broken:
            yield Completion(model=self.name, finish_reason="error", error="backend down")
            return
        first = re.search(r"Cards: \[(.*?)\]", text).group(1).split(",")[0].strip(" '\"")
        if first in "23456789":
            async for item in super().stream(messages, images):
                yield item
        else:
            yield Completion(model=self.name, text="no idea", finish_reason="stop")


def _players(name):
    return Picky(name) if name == "picky" else ScriptedPlayer(name, ["nope"] * 6)


def _table(summary: dict) -> str:
    return markdown_table(summary).replace(summary["run_id"], "RUN")


def test_shard_specs_and_slices_partition_the_items():
    assert parse_shard("0/3") == (0, 3) and parse_shard(" 2 / 3 ") == (2, 3)
    for bad in ("3/3", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ShardError):
            parse_shard(bad)
    config = EvalConfig(task="gp-l", models=["a"], episodes=7, splits=["id", "rule-ood"])
    items = [(split, i, inst.key) for split, i, inst in run_items(config)]
    parts = [[(split, i, inst.key) for split, i, inst in run_items(config, (i, 3))] for i in range(3)]
    assert sorted(x for p in parts for x in p) == sorted(items) and sum(map(len, parts)) == len(items) == 14
    assert [len(p) for p in parts] == [5, 5, 4]  # balanced, across both splits


def test_shard_runs_merge_into_the_unsharded_table(store):
    config = EvalConfig(task="gp-l", models=["picky", "bad"], episodes=5, concurrency=2, splits=["id", "rule-ood"])
    whole = asyncio.run(run_evaluation(store, _players, config))
    shards = [asyncio.run(run_evaluation(store, _players, config, shard=(i, 3))) for i in range(3)]
    assert sum(store.get_run(r)["total"] for r in shards) == store.get_run(whole)["total"] == 20
    with pytest.raises(ShardError, match=r"missing \[2\]"):
        merge_shards(store, shards[:2])
    with pytest.raises(ShardError, match="not a shard"):
        merge_shards(store, [whole, *shards])
    merged = merge_shards(store, shards)
    a, b = summarize(store, whole), summarize(store, merged)
    assert 0 < a["metrics"]["picky"]["id"]["success"] < 5  # a mixed table: order mistakes would show
    assert _table(a) == _table(b)
    assert {k: v for k, v in a.items() if k != "run_id"} == {k: v for k, v in b.items() if k != "run_id"}
    assert store.get_run(merged)["status"] == "finished" and store.get_run(merged)["config"] == config.to_dict()
    assert all(store.get_run(r)["status"] == "merged" for r in shards)
    assert len(store.run_episodes(merged)) == 20 and not store.run_episodes(shards[0])
    other = EvalConfig(task="gp-l", models=["picky", "bad"], episodes=6, splits=["id", "rule-ood"])
    odd = [asyncio.run(run_evaluation(store, _players, other, shard=(i, 2))) for i in range(2)]
    with pytest.raises(ShardError, match="different evaluations"):
        merge_shards(store, [odd[0], shards[1]])


def test_shard_resume_continues_only_that_shard(store):
    config = EvalConfig(task="gp-l", models=["picky"], episodes=4, splits=["id"])
    Picky.broken = True
    try:
        first = asyncio.run(run_evaluation(store, _players, config, shard=(1, 2)))
    finally:
        Picky.broken = False
    run = store.get_run(first)
    assert run["status"] == "incomplete" and run["total"] == 2 and run["config"]["shard"] == [1, 2]
    assert find_resumable(store, config, (1, 2))["id"] == first and find_resumable(store, config, (0, 2)) is None
    with pytest.raises(ShardError, match="is incomplete"):
        merge_shards(store, [first, asyncio.run(run_evaluation(store, _players, config, shard=(0, 2)))])
    again = asyncio.run(run_evaluation(store, _players, config, run_id=first, shard=(1, 2)))
    assert again == first and store.get_run(first)["status"] == "finished"
    assert {e["eval_index"] for e in store.run_episodes(first)} == {1, 3}  # shard 1 of 2: items 1 and 3


def test_shard_service_checks_specs_resume_and_merge_inputs(store, tmp_path):
    from app.live import ModelPool
    from app.settings import Settings

    ctx = services.cli_context(Settings.from_env(env={}, data_dir=str(tmp_path)), store, ModelPool.from_file(None))
    config = EvalConfig(task="gp-l", models=["sft"], episodes=2)
    def start(**kwargs):
        return asyncio.run(services.start_evaluation(ctx, services.CLI, config, **kwargs))

    with pytest.raises(services.ServiceError, match="0 <= i < N"):
        start(shard=(2, 2))
    shard_run = create_run(store, config, (1, 2))
    with pytest.raises(services.ServiceError, match=f"run {shard_run} is shard 1/2; pass the same shard"):
        start(resume=shard_run)
    with pytest.raises(services.ServiceError, match="is not a shard"):
        start(resume=create_run(store, config), shard=(1, 2))
    with pytest.raises(services.ServiceError, match="no run of shard 0/2 of this evaluation"):
        services.merge_shards(ctx, config=config, count=2)
    with pytest.raises(services.ServiceError, match="is running at 0/0"):
        services.merge_shards(ctx, [create_run(store, config, (0, 2)), shard_run])


@pytest.mark.slow
def test_shard_cli_three_shards_and_merge_print_the_unsharded_table(tiny_llama_dir, tmp_path, monkeypatch):
    """The `sftvsrl eval` command line (`app.cli.main`, in this process: one import of torch for six
    runs; each shard still reads and writes only through the data directory)."""
    cfg = tmp_path / "models.toml"
    cfg.write_text("".join(f'[models.{n}]\nbackend = "local"\npath = "{tiny_llama_dir}"\n[models.{n}.decoding]\n'
                           f'max_tokens = 8\ntemperature = 0.0\n\n' for n in ("sft", "rl")))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    flags = ["--task", "gp-l", "--models", "sft", "rl", "--episodes", "3", "--splits", "id", "--config", str(cfg),
             "--data-dir", str(tmp_path / "data"), "--quiet"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = sftvsrl(["eval", *args])
        assert code == 0, err.getvalue()[-2000:]
        return subprocess.CompletedProcess(["sftvsrl", "eval", *args], code, out.getvalue(), err.getvalue())

    def run_id(proc) -> str:
        return proc.stdout.split("run `", 1)[1].split("`", 1)[0]

    def table(proc) -> str:
        return proc.stdout.replace(run_id(proc), "RUN")

    whole = cli(*flags)
    for i in range(3):
        cli(*flags, "--shard", f"{i}/3")
    again = cli(*flags, "--shard", "1/3", "--resume")  # a finished shard resumes to nothing new
    assert "resuming run" in again.stderr
    merged = cli("merge", *flags, "--shards", "3")
    assert table(merged) == table(whole) and "| sft |" in table(whole)
    summary = json.loads((tmp_path / "data" / "eval" / run_id(merged) / "summary.json").read_text())
    assert summary["expected"] == 6
