"""The Findings view's data and the import of its episodes (`app.findings`), and the default model
configuration that serves the pipeline's stages.

The fixtures `tests/fixtures/findings/{gp-l,virl-l}/` are the real output of `sftvsrl train
pipeline --task <task> --quick` (findings.json and episodes.jsonl.gz, 6 episodes per stage and
split; V-IRL-L's untrained quick stages act correctly nowhere);
`tests/fixtures/findings-checkpoints/virl-l/` is `evaluate_stages` on trained V-IRL-L SFT and RL
checkpoints (the first V-IRL-L pair's, since removed: correct actions in distribution; its README
says how it was made).
`test_pipeline.py::test_train_pipeline_quick_end_to_end` imports a freshly produced GP-L one too."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from app import findings as fd
from app.evaluation import summarize
from app.store import Store
from app.ui.inspect_tab import filtered_episodes
from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "findings"
CHECKPOINTS_FIXTURE = ROOT / "tests" / "fixtures" / "findings-checkpoints"


def _lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_load_the_shipped_format():
    f = fd.load("gp-l", FIXTURE)
    assert f is not None and f.stages == ["base", "init", "sft", "rl", "sft-diverse"]
    assert f.run_id.startswith("findings-gp-l-") and len(f.run_id) == len("findings-gp-l-") + 12
    bars = fd.bars(f)
    assert {(b.stage, b.split) for b in bars} == {(s, sp) for s in f.stages for sp in ("id", "rule-ood")}
    for b in bars:
        q = parse_qs(b.link[1:])
        assert q == {"tab": ["inspect"], "run": [f.run_id], "model": [b.stage], "split": [b.split]}
        assert b.value == f.data["table"][b.stage][b.split]["success"]
    assert fd.paper_bars("gp-l") == [("init", 0.115), ("sft", 0.034), ("rl", 0.150)]
    assert fd.load("gp-l", FIXTURE / "nowhere") is None


def test_import_replays_every_episode_once(store):
    """Imported once (a second call, a restarted app and a second replica write nothing); the
    replayed episodes reproduce findings.json's table exactly; Inspect's run/model/split filter
    (what a bar's link applies) lists one stage's episodes on one split."""
    f = fd.load("gp-l", FIXTURE)
    records = _lines(f.episodes_path)
    first = fd.import_episodes(store, f)
    assert first.written and first.episodes == len(records) and first.mismatches == 0
    again = fd.import_episodes(store, f)
    assert not again.written and store.count_episodes(eval_run_id=f.run_id) == len(records)
    other = Store(store.url)  # a restarted app / another replica on the same database
    try:
        assert fd.Importer(other, FIXTURE).ensure("gp-l").written is False
        assert other.count_episodes(eval_run_id=f.run_id) == len(records)
    finally:
        other.close()
    summary = summarize(store, f.run_id)
    assert summary["errors"] == 0
    for stage in f.stages:
        for split in ("id", "rule-ood"):
            assert summary["metrics"][stage][split]["success_rate"] == pytest.approx(
                f.data["table"][stage][split]["success"])
    n = f.data["table"]["rl"]["rule-ood"]["n"]
    eps = filtered_episodes(store, run=f.run_id, model="rl", split="rule-ood")
    assert len(eps) == n and {e["participant"] for e in eps} == {"rl"} and {e["eval_split"] for e in eps} == {"rule-ood"}


def test_imported_steps_are_the_registry_step_records(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    f = fd.load("gp-l", FIXTURE)
    fd.import_episodes(store, f)
    rec = next(r for r in _lines(f.episodes_path) if r["stage"] == "sft" and r["split"] == "rule-ood")
    ep = store.get_episode(fd.episode_id(f.run_id, "sft", "rule-ood", rec["index"]))
    outputs = [s["output"] for s in rec["steps"]]
    assert [s["output"] for s in ep["steps"]] == outputs and ep["success"] == rec["success"]
    assert [(s["reward"], s["outcome"], s["feedback"]) for s in ep["steps"]] == [
        (s["reward"], s["outcome"], s["feedback"]) for s in rec["steps"]]
    first = ep["steps"][0]
    assert first["prompt"][0]["role"] == "user"
    assert "'J', 'Q', and 'K' count as '11', '12', and '13' respectively" in first["prompt"][0]["content"][0]["text"]
    assert first["outcome"] in ("correct", "partial", "wrong_value", "float_rounding", "wrong_cards",
                                "wrong_numbers", "illegal_formula", "aggregated_error", "step_limit")
    if len(ep["steps"]) > 1:  # a failed try: the reply and the verifier's feedback are in the next chat
        second = ep["steps"][1]["prompt"]
        assert second[1] == {"role": "assistant", "content": [{"type": "text", "text": outputs[0]}]}
        assert second[2]["content"][0]["text"].startswith("You failed this trial because")
    # the stages of one hand share a group: Inspect's "models disagree" compares them
    group = store.list_episodes(group_id=ep["group_id"])
    assert {e["participant"] for e in group} == set(f.stages)
    store.close()


def _copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "findings"
    shutil.copytree(FIXTURE, root)
    return root


def _rewrite_episodes(root: Path, lines: list[str]) -> None:
    with gzip.open(root / "gp-l" / fd.EPISODES_FILE, "wt", encoding="utf-8") as f:
        f.write("".join(lines))


@pytest.mark.parametrize("line, message", [
    ("not json\n", "not JSON"),
    ('{"stage": "sft", "split": "id", "index": 0, "task": "gp-l", "params": {}, "steps": "x"}\n',
     "not an episode record"),
    ('{"stage": "sft", "split": "id", "index": 0, "task": "gp-l", "params": {"nope": 1}, '
     '"steps": [{"output": "x"}]}\n', "unknown parameter"),
    ('{"stage": "sft", "split": "id", "index": 0, "task": "gp-l", "params": {"deal_id": "HKC5D2C4"}, '
     '"steps": []}\n', "end before the episode does"),
])
def test_a_bad_episodes_file_is_a_clear_error_and_writes_nothing(tmp_path, line, message):
    root = _copy_fixture(tmp_path)
    _rewrite_episodes(root, [line])
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    f = fd.load("gp-l", root)
    with pytest.raises(fd.FindingsError, match=message):
        fd.import_episodes(store, f)
    assert store.get_run(f.run_id) is None and store.count_episodes() == 0
    store.close()


def test_a_record_the_engine_no_longer_reproduces_is_counted(tmp_path):
    """An episode whose recorded result differs from its replay (the engine changed since the
    evaluation) is imported as replayed, and counted, so the view can say so."""
    root = _copy_fixture(tmp_path)
    path = root / "gp-l" / fd.EPISODES_FILE
    records = _lines(path)
    records[0]["success"] = not records[0]["success"]
    records[1]["steps"][0]["reward"] = 123.0
    _rewrite_episodes(root, [json.dumps(r) + "\n" for r in records])
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = fd.import_episodes(store, fd.load("gp-l", root))
    assert result.written and result.mismatches == 2 and result.episodes == len(records)
    store.close()


def test_bad_or_missing_findings_json(tmp_path):
    root = tmp_path / "findings"
    (root / "gp-l").mkdir(parents=True)
    (root / "gp-l" / "findings.json").write_text("{", encoding="utf-8")
    with pytest.raises(fd.FindingsError, match="not valid JSON"):
        fd.load("gp-l", root)
    (root / "gp-l" / "findings.json").write_text('{"task": "gp-l", "table": {}}', encoding="utf-8")
    with pytest.raises(fd.FindingsError, match="no evaluation table"):
        fd.load("gp-l", root)
    (root / "gp-l" / "findings.json").write_text('{"table": {"sft": {"id": {"success": "high"}}}}', encoding="utf-8")
    with pytest.raises(fd.FindingsError, match="no success rate"):
        fd.load("gp-l", root)
    (root / "gp-l" / "findings.json").write_text('{"table": {"sft": {"id": {"success": 0.5, "se": 0.1}}}}',
                                                 encoding="utf-8")
    f = fd.load("gp-l", root)  # numbers without an episodes file: shown, not linked
    assert f.run_id is None and fd.bars(f)[0].link is None
    with pytest.raises(fd.FindingsError, match="cannot link to episodes"):
        fd.import_episodes(None, f)


def _with_paired(diff: float, se: float) -> fd.Findings:
    data = {"table": {"sft": {"id": {"success": 0.9, "se": 0.01}, "rule-ood": {"success": 0.1, "se": 0.01}}},
            "paired": {"rl_minus_sft": {"rule-ood": {"diff": diff, "se": se, "z": diff / se, "n": 500}}}}
    return fd.Findings("gp-l", data, Path("."))


def test_the_verdict_follows_the_paired_difference():
    assert "RL is ahead at the final checkpoints (not checked at matched skill" in fd.verdict(_with_paired(0.10, 0.02))
    assert "opposite of the paper" in fd.verdict(_with_paired(-0.10, 0.02))
    assert "cannot tell them apart" in fd.verdict(_with_paired(0.02, 0.02))
    lines = fd.explanation(_with_paired(0.10, 0.02))
    assert any("reported in the paper, Llama-3.2-11B" in line and "11.5 %" in line for line in lines)


def test_view_html_draws_the_view_and_says_how_to_produce_it(tmp_path):
    from types import SimpleNamespace

    from app.settings import Settings
    from app.ui.findings_tab import view_html

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ctx = SimpleNamespace(settings=Settings(findings_dir=FIXTURE), store=store)
    html = view_html(ctx)
    f = fd.load("gp-l", FIXTURE)
    assert 'data-testid="bar-rl-rule-ood"' in html and "reported in the paper, Llama-3.2-11B" in html
    assert "11.5 %" in html and "data:image/png;base64," in html and "RL − SFT" in html
    assert 'id="findings-importing"' in html  # the view does not wait for the import it started
    assert fd.importer_for(ctx).ensure("gp-l").run_id == f.run_id  # waits for it (as an Inspect link does)
    assert store.count_episodes(eval_run_id=f.run_id) == sum(1 for _ in fd.read_episodes(f.episodes_path))
    assert 'id="findings-importing"' not in view_html(ctx)
    empty = SimpleNamespace(settings=Settings(findings_dir=tmp_path / "none"), store=store)
    assert "sftvsrl train pipeline --task gp-l --out runs/pipeline/gp-l" in view_html(empty)
    assert "sftvsrl train vision --task gp-vl --out runs/vision/gp-vl" in view_html(empty, "gp-vl")
    store.close()


def test_the_curves_are_drawn_once_per_findings_file(tmp_path, monkeypatch):
    """The view's curves (matplotlib, ~1 s a look) are drawn once per findings file, and afresh
    when the file changes; the view is the same either way."""
    import shutil
    from types import SimpleNamespace

    from app.settings import Settings
    from app.ui import findings_tab

    folder = tmp_path / "findings"
    shutil.copytree(FIXTURE / "gp-l", folder / "gp-l")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ctx = SimpleNamespace(settings=Settings(findings_dir=folder), store=store)
    drawn = []
    real = fd.curves_plot
    monkeypatch.setattr(fd, "curves_plot", lambda f, path, look="light": drawn.append(look) or real(f, path, look))
    monkeypatch.setattr(findings_tab, "_CURVES", {})
    first = findings_tab.view_html(ctx, "gp-l")
    fd.importer_for(ctx).ensure("gp-l")            # the import note goes; the curves stay drawn
    second = findings_tab.view_html(ctx, "gp-l")
    assert drawn == ["light", "presenter"] and 'id="findings-curves"' in first
    assert first.split('id="findings-curves"')[1] == second.split('id="findings-curves"')[1]
    path = folder / "gp-l" / fd.FINDINGS_FILE
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")   # a new findings file
    findings_tab.view_html(ctx, "gp-l")
    assert drawn == ["light", "presenter"] * 2
    store.close()


# ------------------------------------------------------------------------- V-IRL-L and the task selector
def test_load_virl_findings_every_split_and_the_per_step_headline():
    f = fd.load("virl-l", FIXTURE)
    assert f.metric == "per_step_accuracy" and f.metric_words == "per-step accuracy"
    assert f.splits == ["id", "rule-ood", "streets"] and f.stages == ["base", "init", "sft", "rl", "sft-diverse"]
    assert f.run_id.startswith("findings-virl-l-")
    bars = fd.bars(f)
    assert {(b.stage, b.split) for b in bars} == {(s, sp) for s in f.stages for sp in f.splits}
    for b in bars:
        assert b.value == f.data["table"][b.stage][b.split]["value"] and b.n == 6
        assert parse_qs(b.link[1:])["split"] == [b.split]
    assert fd.paper_bars("virl-l") == [("init", 0.808), ("sft", 0.013), ("rl", 0.918)]
    assert [fd.split_label("virl-l", s) for s in f.splits] == [
        "absolute actions (ID)", "relative actions (rule-OOD)", "held-out streets"]
    assert "relative actions" in fd.verdict(f)   # the quick fixture: RL and SFT tie at 0
    lines = fd.explanation(f)
    assert "relative actions instead of compass actions" in lines[0] and "per-step accuracy" in lines[0]
    assert any(line.startswith("On held-out streets: Base 0.0 %") for line in lines)
    assert any("on relative actions (rule-OOD): Init 80.8 %, SFT 1.3 %, RL 91.8 %" in line for line in lines)
    assert not any("J, Q and K" in line or "face card" in line or "flipped rule" in line for line in lines)
    png = fd.curves_plot(f, ROOT / "tests" / "artifacts" / "findings-virl-l-curves.png")
    assert png is not None and png.stat().st_size > 1000


def test_every_shipped_findings_file_loads():
    """What ships in models/checkpoints/findings (GP-L; V-IRL-L once its run is copied there) reads
    with the task's headline, a bar for every (stage, split) of its table and the paper beside it."""
    from game.tasks import get_task

    shipped = fd.available()
    assert "gp-l" in shipped
    for task in shipped:
        f = fd.load(task)
        assert f.metric == get_task(task).headline and set(f.splits) <= set(get_task(task).split_names)
        assert len(fd.bars(f)) == sum(1 for s in f.stages for sp in f.splits if f.data["table"][s].get(sp))
        assert fd.paper_bars(task) and fd.explanation(f)


def test_the_value_is_the_headline_and_success_the_fallback():
    """Bars and sentences show `value` (the task's headline); files written before V-IRL-L have
    only `success`, which is their value."""
    new = {"task": "virl-l", "metric": "per_step_accuracy",
           "table": {"sft": {"id": {"value": 0.75, "success": 0.25, "se": 0.01, "n": 4}}}}
    f = fd.Findings("virl-l", new, Path("."))
    assert [b.value for b in fd.bars(f)] == [0.75] and f.value("sft", "id") == 0.75
    old = fd.Findings("gp-l", {"table": {"sft": {"id": {"success": 0.25, "se": 0.01}}}}, Path("."))
    assert [b.value for b in fd.bars(old)] == [0.25] and old.metric == "success_rate"


@pytest.mark.parametrize("folder", [FIXTURE, CHECKPOINTS_FIXTURE], ids=["quick-pipeline", "trained-checkpoints"])
def test_virl_import_reproduces_the_per_step_table(store, folder):
    """V-IRL-L episodes replay through the registry into one run whose per-stage, per-split
    per-step accuracy (and its step counts, episode success, first-try success) equals the table."""
    f = fd.load("virl-l", folder)
    result = fd.import_episodes(store, f)
    assert result.written and result.mismatches == 0
    assert result.episodes == sum(f.data["table"][s][sp]["n"] for s in f.stages for sp in f.splits)
    summary = summarize(store, f.run_id)
    assert summary["errors"] == 0 and summary["headline"] == "per_step_accuracy"
    correct = 0
    for stage in f.stages:
        for split in f.splits:
            m, cell = summary["metrics"][stage][split], f.data["table"][stage][split]
            assert m["per_step_accuracy"] == pytest.approx(cell["value"])
            assert (m["episodes"], m["steps"], m["correct_steps"]) == (cell["n"], cell["steps"], cell["correct_steps"])
            assert m["success_rate"] == pytest.approx(cell["success"])
            assert m["first_try_success"] == pytest.approx(cell["first_try_success"])
            correct += m["correct_steps"]
    if folder == CHECKPOINTS_FIXTURE:
        assert correct > 0  # the checkpoints act correctly in distribution: non-zero counts agree
    eps = filtered_episodes(store, run=f.run_id, model="rl", split="streets")
    assert len(eps) == f.data["table"]["rl"]["streets"]["n"] and {e["task"] for e in eps} == {"virl-l"}
    ep = store.get_episode(eps[0]["id"])
    assert "turn_direction(" in ep["steps"][0]["prompt"][0]["content"][0]["text"]
    rule_ood = filtered_episodes(store, run=f.run_id, model="rl", split="rule-ood")
    assert all(e["instance"]["params"]["absolute_action"] is False for e in rule_ood)


def _findings_dirs(tmp_path: Path, tasks: tuple[str, ...]) -> Path:
    root = tmp_path / "findings"
    root.mkdir(parents=True)
    for task in tasks:
        shutil.copytree(FIXTURE / task, root / task)
    return root


def test_only_tasks_with_findings_are_offered(tmp_path):
    from app.ui.findings_tab import pick_task, task_choices

    only_gp = _findings_dirs(tmp_path / "a", ("gp-l",))
    both = _findings_dirs(tmp_path / "b", ("gp-l", "virl-l"))
    only_virl = _findings_dirs(tmp_path / "c", ("virl-l",))
    assert fd.available(only_gp) == ["gp-l"] and task_choices(only_gp) == [("GP-L", "gp-l")]
    assert task_choices(both) == [("GP-L", "gp-l"), ("V-IRL-L", "virl-l")]
    assert fd.available(tmp_path / "none") == []
    assert pick_task(None, only_gp) == ("gp-l", "") and pick_task(None, only_virl) == ("virl-l", "")
    assert pick_task("virl-l", both) == ("virl-l", "")
    assert pick_task("virl-l", only_gp) == ("virl-l", "")  # a pipeline task without findings: says how to make them
    assert pick_task("gp-vl", both) == ("gp-vl", "")  # a vision pipeline task: also says how to make them
    task, note = pick_task("gp-l-sft", both)
    assert task == "gp-l" and "has no pipeline findings" in note
    with pytest.raises(ValueError, match="cards"):
        fd.load("cards", both)


@pytest.mark.parametrize("dirs", [("gp-l",), ("gp-l", "virl-l")], ids=["gp-l-only", "both"])
def test_view_html_per_task_with_one_or_both_findings(tmp_path, dirs):
    from types import SimpleNamespace

    from app.settings import Settings
    from app.ui.findings_tab import view_html

    root = _findings_dirs(tmp_path, dirs)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ctx = SimpleNamespace(settings=Settings(findings_dir=root), store=store)
    gp = view_html(ctx, "gp-l")
    assert 'data-task="gp-l"' in gp and "in-distribution (J/Q/K = 10)" in gp and "Episode success" in gp
    assert "held-out streets" not in gp and "11.5 %" in gp
    virl = view_html(ctx, "virl-l")
    if "virl-l" not in dirs:
        assert 'id="findings-missing"' in virl and "sftvsrl train pipeline --task virl-l" in virl
    else:
        f = fd.load("virl-l", root)
        for split in ("id", "rule-ood", "streets"):
            assert f'data-testid="bar-rl-{split}"' in virl
        for label in ("absolute actions (ID)", "relative actions (rule-OOD)", "held-out streets",
                      "Per-step accuracy", "Paired differences of per-step accuracy (same episodes)"):
            assert label in virl
        assert "80.8 %" in virl and "91.8 %" in virl and "data:image/png;base64," in virl
        assert "0 of 18 actions correct" in virl and "J/Q/K" not in virl
        assert fd.importer_for(ctx).ensure("virl-l").run_id == f.run_id
        assert store.count_episodes(eval_run_id=f.run_id) == 90
    # the GP-L import the first view started is waited for (as an Inspect link does)
    assert fd.importer_for(ctx).ensure("gp-l").run_id == fd.load("gp-l", root).run_id
    store.close()


# ------------------------------------------------------------------------- default model config
def test_default_config_offers_the_pipeline_stages(tmp_path):
    """`sft` and `rl` (GP-L's and V-IRL-L's from their pipelines) always; `init` (GP-L, V-IRL-L,
    GP-VL, V-IRL-VL), `sft-diverse` (GP-L, V-IRL-L, GP-VL) and `sft-matched` (GP-L, V-IRL-L) for
    the tasks whose checkpoints exist (here GP-L's only), left out when none does."""
    from models.config import DEFAULT_FILE, load_config

    home = tmp_path / "models"
    home.mkdir()
    shutil.copy(DEFAULT_FILE, home / "models.toml")
    for name in ("gp-l-sft", "gp-l-rl", "gp-l-init", "gp-l-sft-diverse", "virl-l-sft", "virl-l-rl"):
        (home / "checkpoints" / name).mkdir(parents=True)
    cfg = load_config(home / "models.toml", env={})
    assert list(cfg.models) == ["sft", "rl", "init", "sft-diverse"]
    assert set(cfg.skipped) == {"init (virl-l, gp-vl, virl-vl)", "sft-diverse (virl-l, gp-vl)", "sft-matched"}
    assert "gp-vl-init" in cfg.skipped["init (virl-l, gp-vl, virl-vl)"]
    for name in ("sft", "rl"):
        assert cfg[name].path_for("gp-l") == str(home / "checkpoints" / f"gp-l-{name}")
        assert cfg[name].path_for("virl-l") == str(home / "checkpoints" / f"virl-l-{name}")
    for name in ("init", "sft-diverse"):
        assert cfg[name].tasks == ("gp-l",) and cfg[name].optional and set(cfg[name].paths) == {"gp-l"}
        assert cfg[name].path_for("gp-l") == str(home / "checkpoints" / f"gp-l-{name}")
    (home / "checkpoints" / "gp-vl-init").mkdir()
    assert load_config(home / "models.toml", env={})["init"].tasks == ("gp-l", "gp-vl")
    for name in ("gp-vl-init", "gp-l-init"):
        shutil.rmtree(home / "checkpoints" / name)
    cfg = load_config(home / "models.toml", env={})
    assert list(cfg.models) == ["sft", "rl", "sft-diverse"] and "gp-l-init" in cfg.skipped["init"]
    # the packaged file itself parses, and lists sft and rl whatever else is present
    assert list(load_config(DEFAULT_FILE, env={}).models)[:2] == ["sft", "rl"]


def test_optional_is_a_checked_boolean(tmp_path):
    from models.config import ConfigError, load_config

    f = tmp_path / "models.toml"
    f.write_text('[models.x]\nbackend = "local"\npath = "gone"\noptional = "yes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="optional must be true or false"):
        load_config(f, env={})
    f.write_text('[models.x]\nbackend = "local"\npath = "gone"\n', encoding="utf-8")
    assert list(load_config(f, env={"SFTVSRL_MODEL_X_OPTIONAL": "true"}).models) == []
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(f, env={"SFTVSRL_MODEL_X_OPTIONAL": "perhaps"})


def test_verdict_when_rl_and_sft_tie_on_every_episode(tmp_path):
    """Identical outcomes (SE 0, difference 0) are said as such, not as "within two SE"; each OOD
    split of the task gets its own sentence (V-IRL-VL: relative actions and held-out routes)."""
    cell = {"value": 0.0, "se": 0.0, "n": 4}
    data = {"task": "virl-vl", "metric": "per_step_accuracy",
            "protocol": {"splits": {"id": "", "rule-ood": "", "visual-ood": ""}},
            "table": {"sft": {"id": dict(cell, value=0.5), "rule-ood": cell, "visual-ood": dict(cell, value=0.5)},
                      "rl": {"id": dict(cell, value=0.25), "rule-ood": cell, "visual-ood": dict(cell, value=0.75)}},
            "paired": {"rl_minus_sft": {"rule-ood": {"diff": 0.0, "se": 0.0, "n": 4},
                                        "visual-ood": {"diff": 0.25, "se": 0.1, "n": 4}}}}
    f = fd.Findings("virl-vl", data, tmp_path)
    verdict = fd.verdict(f)
    assert verdict.startswith("On relative actions RL and SFT score the same on every episode (0.0 %)")
    assert "Neither gets any of it right." in verdict and "within two standard errors" not in verdict
    assert "RL − SFT on held-out routes: +25.0 points ± 10.0" in verdict and "as the paper found" not in verdict
    assert "RL is ahead at the final checkpoints" in verdict


def _lens_file(diffs: dict[str, list[float]], se: float = 0.03) -> dict:
    """A format-2 GP-L findings dict whose lenses hold the given RL − SFT rule-OOD differences
    (lens -> one per training seed)."""
    from game.findings import aggregate_lenses

    seeds = range(len(next(iter(diffs.values()))))
    per_seed = {seed: {lens: {"diff": {"rule-ood": {"diff": v[seed], "se": se, "n": 300}}}
                       for lens, v in diffs.items()} for seed in seeds}
    cell = {"value": 0.5, "se": 0.03, "n": 300, "first_try_success": 0.4, "solved_after_feedback": 0.2}
    return {"task": "gp-l", "format": 2, "metric": "success_rate",
            "protocol": {"splits": {"id": "", "rule-ood": "", "reworded": ""}},
            "table": {s: {"id": cell, "rule-ood": cell, "reworded": dict(cell, value=0.45)}
                      for s in ("init", "sft", "rl", "sft-matched")},
            "lenses": aggregate_lenses(per_seed, ["rule-ood"])}


def test_the_paper_is_named_only_when_every_lens_that_matters_holds_in_every_seed(tmp_path):
    """Words come from the lens numbers: "as the paper found" needs RL ahead at matched ID skill and
    at the final checkpoints, beyond 2 SE on the mean and positive in every seed."""
    data = _lens_file({"final": [0.2, 0.15, 0.18], "matched_id": [0.12, 0.1, 0.09], "matched_kl": [0.1, 0.12, 0.09]})
    data["paired"] = {"rl_minus_init": {"id": {"diff": 0.1, "se": 0.02, "n": 300}}}
    holds = fd.Findings("gp-l", data, tmp_path)

    def long_headline(f):
        return fd.lens_words(f)["headline"]

    # the banner's one line says the same in short
    assert fd.headline(holds) == "RL generalizes better than SFT on the flipped rule under every lens — as the paper found."
    assert long_headline(holds).startswith("RL generalizes better than SFT on the flipped rule under every lens")
    assert "in every training seed (RL − SFT +17.7 points ± 1.7 at the final checkpoints" in long_headline(holds)
    assert long_headline(holds).endswith("— as the paper found.")
    assert "at matched KL to Init: RL − SFT +10.3 points" in fd.verdict(holds)
    # every lens holds but RL did not learn the ID task: SFT lost ground, RL stayed put — not the paper
    data["paired"]["rl_minus_init"]["id"] = {"diff": -0.02, "se": 0.024, "n": 300}
    still = long_headline(fd.Findings("gp-l", data, tmp_path))
    assert "as the paper found" not in still and "RL did not learn the in-distribution task here" in still
    assert fd.headline(fd.Findings("gp-l", data, tmp_path)) == (
        "RL beats SFT on the flipped rule under 3 of 3 lenses; but RL did not learn in distribution — the paper's "
        "finding holds only partly.")
    # one seed where matched-ID skill reverses: no claim, and the words say which lens breaks
    partly = fd.Findings("gp-l", _lens_file({"final": [0.2, 0.15, 0.18], "matched_id": [0.12, 0.1, -0.05]}), tmp_path)
    head = long_headline(partly)
    assert "as the paper found" not in head and "holds only partly" in head
    assert "RL beats SFT at the final checkpoints, but not at matched in-distribution skill" in head
    reversed_ = fd.Findings("gp-l", _lens_file({"final": [-0.2, -0.15, -0.18], "matched_id": [-0.12, -0.1, -0.2]}),
                            tmp_path)
    assert "does not reproduce" in long_headline(reversed_) and "SFT is ahead" in long_headline(reversed_)
    # the wording control and the feedback share are read out from the table
    notes = " ".join(fd.explanation(holds))
    assert "the same rule in held-out words" in notes and "came after the verifier's feedback" in notes
    assert "every stage scores about the same on both: they read the rule" in notes   # -5 points, under 2 SE


def test_markdown_report_is_every_number_of_the_file(tmp_path):
    from game.findings import View, markdown

    data = _lens_file({"final": [0.2, 0.1], "matched_id": [0.1, -0.02]})
    text = markdown(data, View(ood={"rule-ood": "the flipped rule"}, instances="hands",
                               labels={"id": "ID", "rule-ood": "rule-OOD", "reworded": "reworded"}, control="reworded"))
    assert "| stage | ID | rule-OOD | reworded | KL(Init ‖ ·) |" in text
    assert "| at matched in-distribution skill | – | +4.0 points ± 2.1 (+10.0 points, -2.0 points) | – |" in text
    assert "**On the flipped rule, RL beats SFT at the final checkpoints, but not at matched" in text
