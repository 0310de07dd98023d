"""The service layer (`app.services`) is the one way in: the UI's Evaluate tab starts evaluations
through it (each model plays the task's checkpoint), live groups obey the cap, and a person's V-IRL
move is graded the same in the V-IRL tab's logic, through the runner (API / CLI) and in the CLI."""
from __future__ import annotations

import asyncio
import builtins
from pathlib import Path

import pytest

pytest.importorskip("torch")

from app import services
from app.live import ModelPool
from app.runner import HumanPlayer, ScriptedPlayer, play
from app.settings import Settings
from app.store import Store
from game.tasks import Instance


def _ctx(tmp_path: Path):
    settings = Settings.from_env(env={}, data_dir=str(tmp_path))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    return services.cli_context(settings, store, ModelPool.from_file(None))


def test_ui_virl_evaluation_plays_the_virl_checkpoint(tmp_path):
    """Regression: the Evaluate tab asked the pool for a player without the task, so V-IRL was
    played by the GP-L checkpoint (0 %, card lists as replies)."""
    from app.ui.evaluate_tab import launch

    ctx = _ctx(tmp_path)
    spec = ctx.pool.spec("sft")
    assert spec.path_for("virl-l") != spec.path_for("gp-l")  # the default sft has one checkpoint per task

    async def go():
        run_id, job = await launch(ctx, services.CLI, "virl-l", ["id"], ["sft"], 1)
        await job
        return run_id

    try:
        run_id = asyncio.run(go())
    finally:
        ctx.pool.wait_idle()
    paths = {key[1] for key in ctx.pool._backends}
    assert paths == {spec.path_for("virl-l")}
    run = ctx.store.get_run(run_id)
    assert run["status"] == "finished" and run["config"]["task"] == "virl-l"


def test_one_evaluation_at_a_time_and_bad_models_are_refused(tmp_path):
    from app.evaluation import EvalConfig

    ctx = _ctx(tmp_path)

    async def go():
        cli = services.CLI
        with pytest.raises(services.ServiceError, match="unknown model 'nope'"):
            await services.start_evaluation(ctx, cli, EvalConfig("gp-l", ["nope"], episodes=1))
        run_id, job = await services.start_evaluation(ctx, cli, EvalConfig("gp-l", ["sft"], episodes=1))
        with pytest.raises(services.Conflict, match="already running"):  # 409
            await services.start_evaluation(ctx, cli, EvalConfig("gp-l", ["rl"], episodes=1))
        services.cancel_evaluation(ctx, cli, run_id)
        await asyncio.gather(job, return_exceptions=True)
        with pytest.raises(services.ServiceError, match="not running"):
            services.cancel_evaluation(ctx, cli, run_id)

    try:
        asyncio.run(go())
    finally:
        ctx.pool.wait_idle()


def test_live_groups_are_capped_and_sources_checked(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    with pytest.raises(services.ServiceError, match="not allowed here; use bundled:helsinki"):
        services.live_instance(ctx, "virl-l", {"source": "/etc"})
    inst = services.live_instance(ctx, "virl-l", {"route": 1})
    assert inst.config.source == ctx.settings.virl_source
    monkeypatch.setattr(services, "MAX_LIVE_GROUPS", 1)

    async def go():
        human = HumanPlayer()
        group = await services.start_group(ctx, services.CLI, inst, [human])
        with pytest.raises(services.Busy, match="1 games are running"):
            await services.start_group(ctx, services.CLI, inst, [ScriptedPlayer("s", [])])
        group.task.cancel()
        await asyncio.gather(group.task, return_exceptions=True)

    asyncio.run(go())


def test_a_person_virl_move_grades_the_same_in_the_tab_the_runner_and_the_cli(tmp_path, monkeypatch, capsys):
    """Regression: route 2, seed 0, `forward()` at the first position was −1.5 "not at any
    intersection" in the V-IRL tab and −1.0 "incorrect action" over the API and the CLI."""
    from app.cli import main
    from app.ui import virl_play

    walk = virl_play.Walk("bundled:helsinki", 2, True, 0, ("forward()",))
    tab = virl_play.episode_of(walk).records[0]
    assert (tab.reward, tab.outcome.value) == (-1.0, "wrong_action")

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    inst = Instance("virl-l", {"source": "bundled:helsinki", "route": 2, "seed": 0})

    async def runner():  # what POST /api/episodes/{id}/submit and `sftvsrl play --human` drive
        human = HumanPlayer()
        async for ev in play(human, inst, store):
            if ev.type == "waiting":
                human.submit("forward()")
            if ev.type == "step":
                return ev

    step = asyncio.run(runner())
    assert (step.reward, step.feedback, step.outcome) == (tab.reward, tab.verify_info, tab.outcome.value)

    moves = iter(["forward()"] * 3)
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(moves))
    assert main(["play", "--task", "virl-l", "--route", "2", "--seed", "0", "--human",
                 "--database-url", f"sqlite:///{tmp_path / 'c.db'}", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"[you] call 1: wrong_action ({tab.reward:+g}) {tab.verify_info[:40]}" in out


def test_a_shared_pool_closed_by_an_app_shutdown_is_replaced_on_next_use():
    """An app's shutdown closes the process-wide worker pool; a later caller in the same process
    (the next test, an embedding program) gets a fresh pool, not "the server is shutting down"
    (seen when the toy-task test's app ran before the UI-logic tests in one pytest worker)."""
    from app import jobs, workers

    closed = workers.shared_pool()
    closed.close()
    fresh = workers.shared_pool()
    try:
        assert fresh is not closed and closed.closed and not fresh.closed
        assert fresh.run_sync(jobs.gp_inspect, "HKC5D2C4", "face10", timeout=120)["solvable"]
    finally:
        fresh.close()
