"""The staged tiny-model pipeline (base → init → sft / rl / sft-diverse, several seeds, every lens)
end to end, and V-IRL-L's synthetic training cities and corpora. (GRPO's update: test_grpo.py;
GP-L's corpora: test_gp_corpus.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from models.train.pipeline import PipelineConfig, paired  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_paired_difference():
    r = paired([1, 1, 0, 1], [0, 1, 0, 0])
    assert r["diff"] == 0.5 and r["n"] == 4 and r["se"] > 0


def test_train_pipeline_quick_end_to_end(tmp_path):
    """`sftvsrl train pipeline --quick` trains all five stages and writes findings.json."""
    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "train", "pipeline", "--quick", "--out", str(out),
                           "--no-progress", "--threads", "1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from models.train.pipeline import stage_dir

    cfg = PipelineConfig.for_task("gp-l", quick=True)
    for stage in ("base", "init", "sft-diverse"):
        assert json.loads((stage_dir(out, stage) / "training.json").read_text())["compute"]["flops"] > 0
    for seed in cfg.seeds:
        for stage in ("sft", "rl"):
            rec = json.loads((stage_dir(out, stage, seed) / "training.json").read_text())
            assert rec["seed"] == seed and rec["compute"]["flops"] > 0 and rec["snapshots"]
    findings = json.loads((out / "findings.json").read_text())
    assert findings["format"] == 2 and findings["seeds"] == list(cfg.seeds)
    assert set(findings["table"]) == {"base", "init", "sft", "rl", "sft-matched", "sft-diverse"}
    assert set(findings["splits"]) == {"id", "rule-ood", "reworded"}
    for lens in ("final", "matched_compute", "matched_id", "matched_kl"):
        agg = findings["lenses"][lens]["rule-ood"]
        assert agg["seeds"] == len(cfg.seeds) and len(agg["per_seed"]) == len(cfg.seeds)
    assert set(findings["seed_table"]["rl"]["id"]["values"]) == {str(s) for s in cfg.seeds}
    assert findings["curves"][str(cfg.seeds[0])]["sft"] and findings["curves"][str(cfg.seeds[0])]["rl"]
    assert "rl_minus_sft" in findings["paired"] and "rl_minus_sft_matched" in findings["paired"]
    assert "rule-ood" in proc.stdout  # the protocol's split names
    # the model cards say what each stage saw
    assert "Never saw" in (stage_dir(out, "rl", cfg.seeds[0]) / "README.md").read_text()
    # the final table's episodes ship next to findings.json and import into a store as one run
    # whose per-stage, per-split success reproduces the table (the Findings view's links)
    from app import findings as fd
    from app.evaluation import summarize
    from app.store import Store

    assert (out / "episodes.jsonl.gz").is_file()
    (tmp_path / "shipped" / "gp-l").mkdir(parents=True)
    for name in ("findings.json", "episodes.jsonl.gz"):
        (tmp_path / "shipped" / "gp-l" / name).write_bytes((out / name).read_bytes())
    f = fd.load("gp-l", tmp_path / "shipped")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = fd.import_episodes(store, f)
    assert result.written and result.mismatches == 0
    summary = summarize(store, result.run_id)
    for stage, row in findings["table"].items():
        for split in findings["splits"]:
            assert summary["metrics"][stage][split]["episodes"] == row[split]["n"]
            assert summary["metrics"][stage][split]["success_rate"] == pytest.approx(row[split]["success"])
    store.close()
    # resumable: a second run keeps the trained stages
    again = subprocess.run([sys.executable, "-m", "app.cli", "train", "pipeline", "--quick", "--out", str(out),
                            "--no-progress", "--no-eval"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# V-IRL-L: the synthetic training cities and the pipeline's corpora


def test_paired_ratio_difference_is_the_pooled_per_step_difference():
    from game.protocol import paired_ratio_difference

    a, b = [[3, 4], [2, 2], [0, 3]], [[1, 4], [2, 3], [1, 3]]
    r = paired_ratio_difference(a, b)
    assert r["diff"] == pytest.approx(5 / 9 - 4 / 10) and r["n"] == 3 and r["se"] > 0
    same = paired_ratio_difference(a, a)
    assert same["diff"] == 0 and same["se"] == 0
    with pytest.raises(ValueError):
        paired_ratio_difference(a, b[:2])


def test_training_cities_share_no_place_with_helsinki():
    """The base's cities are Helsinki's street graph turned into other towns: no place name of the
    evaluation map survives, bearings are rotated (so compass words change), and both left- and
    right-handed turn patterns occur."""
    from game.virl.cities import CITY_TRANSFORMS, training_city
    from game.virl.datasets import _bundled_features

    helsinki = {p.name for p in _bundled_features("helsinki.map.json.gz").places}
    city = training_city(1)
    assert len(city.routes) > 300 and city.name == "city:1"
    assert not {p.name for p in city.features.places} & helsinki
    seen = {m.landmark.split(" is on your")[0].removeprefix("The destination ") for r in city.routes
            for m in r.milestones}
    assert len(seen) > 100 and not seen & helsinki
    assert len(CITY_TRANSFORMS) == 8 and all(angle % 360 for angle, _ in CITY_TRANSFORMS)


def test_virl_base_corpus_never_shows_the_rule_ood_configuration():
    """The V-IRL-L base walks the synthetic cities under both action spaces and never a Helsinki
    route; Init/SFT data are Helsinki ID routes with absolute actions only; every token of a
    rule-OOD prompt that its ID twin lacks (the relative action-space line) occurs in the base corpus."""
    from game.tasks import get_task, open_session
    from models.train.data import ChatCodec
    from models.train.pipeline import build_tokenizer
    from models.train.tasks import training_task

    cfg = PipelineConfig.for_task("virl-l", quick=True)
    task = training_task("virl-l")
    base = task.stage_pairs("base", 300, 0, cfg)
    ids = task.stage_pairs("id", 200, 0, cfg)
    relative = "x could be any following ['left', 'right', 'slightly left', 'slightly right']"
    assert sum(relative in p for p, _ in base) > 50 and sum(relative not in p for p, _ in base) > 50
    assert not any(relative in p for p, _ in ids)
    spec = get_task("virl-l")
    ood = [open_session(x) for x in spec.instances("rule-ood", n=48)]
    instructions = {s.describe()["instruction"] for s in ood}
    assert not any(text in p for p, _ in base for text in instructions)
    codec = ChatCodec(build_tokenizer(cfg))
    seen = set()
    for p, a in base:
        seen.update(codec.encode_text(p + a))
    # what a rule-OOD prompt adds to the ID prompt of the same episode (the action-space line) is
    # made of tokens the base trained on
    for x, y in zip(spec.instances("rule-ood", n=20), spec.instances("id", n=20)):
        extra = set(codec.encode_text(open_session(x).prompt())) - set(codec.encode_text(open_session(y).prompt()))
        assert extra and extra <= seen, [codec.tok.decode([i]) for i in extra - seen]


def test_later_stages_start_from_the_chosen_base_snapshot(tmp_path):
    from models.train.pipeline import base_dir, base_snapshot_steps

    cfg = PipelineConfig.quick().with_changes(base_steps=40)
    assert base_snapshot_steps(cfg) == [10, 20, 30] and base_dir(tmp_path, cfg) == tmp_path / "base"
    early = cfg.with_changes(base_snapshot=7)
    assert base_snapshot_steps(early) == [7, 10, 20, 30]
    assert base_dir(tmp_path, early) == tmp_path / "base-snapshots" / "step-00007"
    # the recorded config round-trips, so the table's base row is the snapshot Init started from
    assert PipelineConfig.from_dict(json.loads(json.dumps(__import__("dataclasses").asdict(early)))) == early
    with pytest.raises(ValueError, match="base_snapshot must be a step between 1 and 39"):
        base_snapshot_steps(cfg.with_changes(base_snapshot=40))
