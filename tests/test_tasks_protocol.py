"""The task registry (`game.tasks`) and the evaluation protocol (`game.protocol`): typed configs,
seeded instance streams, sessions, the person's-move reply, metrics, and the import rule."""
from __future__ import annotations

import ast
import copy
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


def test_a_step_record_as_stored_is_asdict_and_shares_nothing_with_the_session():
    """`StepRecord.to_dict` skips `asdict`'s deep copy: the same dict, for replies that win, lose
    and cannot be read on every task, and no part of it is the session's own live state."""
    import dataclasses

    from game.tasks import StepRecord
    from models.chat import Conversation

    for task in TASKS:
        for inst in instances(task, "id", 2):
            s, conv = open_session(inst), Conversation(image=get_task(task).vision)
            replies = iter([s.episode.oracle_reply() if hasattr(s.episode, "oracle_reply") else "{}", "nonsense",
                            '{"formula": "1+2"}'] + ["nonsense"] * 40)
            records = []
            while not s.done:
                messages = conv.messages_for(s.prompt())
                text = next(replies)
                r = s.step(text)
                conv.record(text, r.feedback)
                step = StepRecord.of(r, text, timing={"s": 1.0}, prompt=messages).to_dict()
                assert step == dataclasses.asdict(StepRecord(**dataclasses.asdict(r), output=text, timing={"s": 1.0},
                                                             prompt=messages))
                records.append(copy.deepcopy(step))
                step["parsed"]["x"] = step["state"]["x"] = 1   # the record is the caller's to keep or change
            assert [r.parsed for r in s.results] == [x["parsed"] for x in records]
            assert [r.state for r in s.results] == [x["state"] for x in records]


def test_person_move_replies():
    gp = get_task("gp-l")
    s = open_session(Instance("gp-l", {"deal_id": "HKC5D2C4"}))
    r = s.step(gp.person_reply(s, "(10−4)×(5−2+1)"))
    assert r.parsed["formula"].startswith("(10-4)*(5-2+1)")
    v = open_session(Instance("virl-l", {"route": 2, "seed": 0}))
    wrong = "forward()" if v.episode.entry.gt_action != "forward()" else "stop()"
    r = v.step(get_task("virl-l").person_reply(v, wrong))
    assert (r.reward, r.outcome) == (-1.0, "wrong_action")  # an action alone claims no observation


def _wrong_move(session) -> str:
    gt = session.episode.entry.gt_action
    return get_task("virl-l").person_reply(session, "forward()" if gt != "forward()" else "stop()")


@pytest.mark.parametrize("exhaust_at", [None, 2])
def test_a_virl_step_record_says_where_the_walker_is(exhaust_at):
    """Each V-IRL step record's `state` holds the walker's place after the call, the same place
    that walking the route's rail gives: one rail position further after each correct move, the
    same after a wrong one, and where it stood when a budget ran out (although the engine's own
    index moves on then). GP leaves `state` empty."""
    instance = Instance("virl-l", {"route": 0, "seed": 0})   # a rail of 7 positions
    s = open_session(instance)
    rail = s.episode.rail.entries
    at, outputs, missed = 0, [], set()   # the rail position reached, walking the rail ourselves
    while not s.done:
        wrong = exhaust_at == at or (at == 1 and at not in missed)   # position 1: wrong once, then right
        missed |= {at} if wrong else set()
        text = _wrong_move(s) if wrong else s.episode.oracle_reply()
        outputs.append(text)
        r = s.step(text)
        if r.reward > 0 and not rail[at].is_stop:
            at += 1
        assert r.state == {"rail_index": at, "position": list(rail[at].position), "heading": rail[at].heading,
                           "pano_id": rail[at].pano_id, "walk": [list(e.position) for e in rail[:at + 1]]}
    assert s.success == (exhaust_at is None) and (at == len(rail) - 1) == (exhaust_at is None)
    if exhaust_at is not None:
        assert s.results[-1].outcome == "budget_exceeded" and s.results[-1].parsed["rail_index"] == at + 1
    assert any(r.reward < 0 for r in s.results)
    replay = open_session(instance)   # the same replies again: the same places
    assert [replay.step(t).state for t in outputs] == [r.state for r in s.results]
    assert open_session(GP_HAND).step("nonsense").state == {}


GP_HAND = Instance("gp-l", {"deal_id": "HKC5D2C4"})


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


def _module_graph(layers: tuple[str, ...] = ("game", "models", "app")) -> dict[str, set[str]]:
    """{module: the modules it imports}, counting imports inside functions too (`from x import
    y` counts x and x.y when that is a module); a module's import of its own package (`from .
    import name`, run when the module is imported anyway) is not an edge."""
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for layer in layers for f in (ROOT / layer).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                pkg = path.relative_to(ROOT).with_suffix("").parts[:-node.level] if node.level else ()
                base = ".".join(pkg + ((node.module,) if node.module else ()))
                names |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[mod] = {n for n in names if n in files and n != mod and not mod.startswith(n + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    """No module imports one that (directly or not) imports it back, not even inside a function:
    the layers and the modules within them form a one-way graph."""
    graph = _module_graph()
    assert len(graph) > 100 and "models.train.pipeline" in graph["app.cli.train"]
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
