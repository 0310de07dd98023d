"""The task registry (`game.tasks`) and the evaluation protocol (`game.protocol`): typed configs,
seeded instance streams, sessions, the person's-move reply, metrics, and the import rule."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from game import protocol
from game.protocol import EpisodeScore, binomial_se, instances, paired, shard, split_metrics
from game.tasks import TASKS, Instance, InstanceError, get_task, open_session, outcomes

ROOT = Path(__file__).resolve().parents[1]


def test_registry_has_the_four_tasks_with_their_splits():
    assert list(TASKS) == ["gp-l", "gp-vl", "virl-l", "virl-vl"]
    assert protocol.splits("gp-l") == ("id", "rule-ood", "reworded")
    assert protocol.splits("gp-vl") == ("id", "rule-ood", "visual-ood")
    assert protocol.splits("virl-l") == ("id", "rule-ood", "streets")
    assert protocol.splits("virl-vl") == ("id", "rule-ood", "visual-ood")
    assert {"correct", "step_limit", "budget_exceeded", "wrong_observation"} <= set(outcomes())
    with pytest.raises(InstanceError, match="unknown task 'chess'"):
        get_task("chess")


@pytest.mark.parametrize("task,params,msg", [
    ("gp-l", {"deal_id": "HKC5D2C4", "colour": "red"}, "unknown parameter.*'colour'"),
    ("gp-l", {"deal_id": "HKC5D2C4", "verify_iter": 0}, "'verify_iter' must be between 1 and 20"),
    ("gp-l", {"deal_id": "HKC5D2C4", "lenient": "yes"}, "'lenient' must be true or false"),
    ("gp-l", {}, "missing parameter.*deal_id"),
    ("virl-l", {"heading": 400}, "'heading' must be between 0 and 359"),
    ("virl-l", {"seed": -1}, "'seed' must be between 0"),
    ("virl-vl", {"verify_iter": "many"}, "'verify_iter' must be a whole number"),
])
def test_configs_reject_unknown_and_out_of_range_parameters(task, params, msg):
    with pytest.raises(InstanceError, match=msg):
        Instance(task, params)
    assert issubclass(InstanceError, ValueError)


def test_typed_config():
    cfg = Instance("virl-l", {"route": "3", "seed": "7", "absolute_action": 0}).config
    assert (cfg.route, cfg.seed, cfg.absolute_action, cfg.verify_iter) == (3, 7, False, 2)
    assert Instance("gp-vl", {"deal_id": "HKC5D2C4"}).config.verify_iter == 5


def test_instance_streams_are_deterministic_and_shared_by_both_executors():
    gp = instances("gp-l", "id")
    assert len(gp) == 234 and gp == instances("gp-l", "id", 234, seed=42)
    assert instances("gp-l", "id", 500)[:234] == gp  # a longer run extends the same stream
    assert {i.params["rule"] for i in instances("gp-l", "rule-ood", 5)} == {"face_jqk"}
    rid, rood = instances("virl-l", "id", 5), instances("virl-l", "rule-ood", 5)
    assert [(i.params["route"], i.params["seed"]) for i in rid] == [(k, k) for k in range(5)]
    assert [i.params["absolute_action"] for i in rood] == [False] * 5
    assert [(i.params["route"], i.params["seed"]) for i in rood] == [(k, k) for k in range(5)]
    streets = instances("virl-l", "streets", 10_000)
    assert len(streets) == len(get_task("virl-l").instances("streets")) == 158  # one episode per route
    items = instances("gp-l", "id", 10)
    assert shard(items, 0, 3) + shard(items, 1, 3) + shard(items, 2, 3) != items
    assert sorted(shard(items, 0, 3) + shard(items, 1, 3) + shard(items, 2, 3), key=items.index) == items
    rec = instances("gp-vl", "id", 2, recognition=True)
    assert rec[0].config.verify_iter == 1 and not rec[0].config.enable_verification
    with pytest.raises(InstanceError, match="recognition"):
        instances("gp-l", "id", 2, recognition=True)
    with pytest.raises(InstanceError, match="unknown split"):
        instances("gp-l", "streets", 2)


def test_sessions_play_both_families_through_one_interface():
    for task in TASKS:
        inst = instances(task, "id", 1)[0]
        s = open_session(inst)
        assert s.prompt() and (s.image() is not None) == get_task(task).vision
        while not s.done:
            s.step("nonsense")
        assert not s.success and s.outcome in ("step_limit", "budget_exceeded")
        assert all(r.outcome in get_task(task).outcomes for r in s.results)


def test_person_move_replies():
    gp = get_task("gp-l")
    s = open_session(Instance("gp-l", {"deal_id": "HKC5D2C4"}))
    r = s.step(gp.person_reply(s, "(10−4)×(5−2+1)"))
    assert r.parsed["formula"].startswith("(10-4)*(5-2+1)")
    v = open_session(Instance("virl-l", {"route": 2, "seed": 0}))
    wrong = "forward()" if v.episode.entry.gt_action != "forward()" else "stop()"
    r = v.step(get_task("virl-l").person_reply(v, wrong))
    assert (r.reward, r.outcome) == (-1.0, "wrong_action")  # an action alone claims no observation


def test_metrics_and_paired_comparison():
    a = [EpisodeScore(True, ("wrong_value", "correct"), (-1.0, 5.0)), EpisodeScore(False, ("illegal_formula",) * 5
                                                                                     + ("step_limit",), (-3.0,) * 5 + (-1.0,))]
    m = split_metrics("gp-l", a)
    assert (m["episodes"], m["success_rate"], m["success_se"]) == (2, 0.5, binomial_se(0.5, 2))
    assert m["steps"] == 8 and m["per_step_accuracy"] == 1 / 8 and m["mean_calls_when_solved"] == 2
    assert m["reference_rates"]["ILLEGAL_FORMULA"] == 5 / 8 and m["reference_rates"]["CORRECT_SOLUTION"] == 0.5
    assert m["headline"] == m["success_rate"] and "recognition_accuracy" not in m
    v = split_metrics("virl-vl", [EpisodeScore(True, ("correct",) * 3, (1.0,) * 3),
                                  EpisodeScore(False, ("wrong_action", "wrong_observation", "budget_exceeded"),
                                               (-1.0, -1.5, -1.0))])
    assert v["headline"] == v["per_step_accuracy"] == 0.5 and v["headline_se"] == binomial_se(0.5, 6)
    assert split_metrics("gp-vl", [EpisodeScore(False, ("wrong_cards", "correct"), (-1.5, 5))])[
        "recognition_accuracy"] == 0.5
    p = paired("id", {"sft": {0: True, 1: False, 2: True}, "rl": {0: True, 1: True, 3: False}})
    assert p == [{"split": "id", "a": "sft", "b": "rl", "n": 2, "both": 1, "only_a": 0, "only_b": 1, "neither": 0}]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                pkg = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                out.add(".".join(pkg + ((node.module,) if node.module else ())))
            elif node.module:
                out.add(node.module)
    return out


@pytest.mark.parametrize("layer,forbidden", [("game", ("models", "app")), ("models", ("app",))])
def test_imports_point_one_way(layer, forbidden):
    """game/ imports nothing from models/ or app/; models/ imports nothing from app/."""
    files = sorted((ROOT / layer).rglob("*.py"))
    assert len(files) > 10
    bad = [f"{f.relative_to(ROOT)} imports {m}" for f in files for m in _imports(f)
           if m.split(".")[0] in forbidden]
    assert not bad, bad


def test_the_import_scan_sees_upward_imports(tmp_path, monkeypatch):
    f = ROOT / "game" / "gp" / "x.py"
    src = "from ...app import store\nimport models.chat\nfrom .. import tasks\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: src)
    assert _imports(f) == {"app", "models.chat", "game"}
