"""The trainers' one configuration module (`models.train.config`): every hyper-parameter documented
where it is declared, one preset mechanism (presets on the training tasks), and the recorded
configuration of every shipped checkpoint and findings file is what `sftvsrl train pipeline
--print-config` prints for its task (the fields that decide its weights; the evaluation's too for
findings), or is named here as a record of older code with the reason."""
from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest

from models.train.config import (LINEAGE, GRPOConfig, PipelineConfig, VisionConfig, config_for, docs, pipeline_config,
                                 rl_config)
from models.train.tasks import TRAINING, VISION_TRAINING

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "models" / "checkpoints"

# Shipped records of older trainers: their configs name code that no longer exists, so no current
# preset trains them (they are read as plain JSON; the checkpoints stay as shipped).
LEGACY = {
    "gp-vl-text": "the GP-L base of the first staged pipeline (flat rl_* fields, a base corpus since replaced), "
                  "kept as GP-VL's language model",
}
LEGACY_FINDINGS: dict[str, str] = {}   # (none now: the V-IRL-L run of the first pipeline was replaced)


def _records():
    for path in sorted(CHECKPOINTS.glob("*/training.json")):
        yield path.parent.name, json.loads(path.read_text(encoding="utf-8"))


def _staged(record: dict) -> tuple[dict, str] | None:
    """(the recorded pipeline config, the stage) of a staged-pipeline checkpoint, or None."""
    for key in ("pipeline_config", "vision_config"):
        if key in record:
            return record[key], record["stage"]
    if record.get("stage") and record["task"] in {**TRAINING, **VISION_TRAINING}:
        return record["config"], record["stage"]
    return None


@pytest.mark.parametrize("name,record", [pytest.param(n, r, id=n) for n, r in _records() if n not in LEGACY])
def test_every_shipped_checkpoint_is_trained_by_its_printed_config(name, record):
    """The fields that decide a shipped checkpoint's weights (the model's, its stage's and its
    ancestors') equal the resolved config `--print-config` prints for its task; an RL checkpoint's
    GRPO config is the one its pipeline config gives for its seed."""
    staged = _staged(record)
    task = record["task"]
    assert staged is not None, f"{name}: not a staged-pipeline record"
    data, stage = staged
    recorded = config_for(task).from_dict(data)
    printed = pipeline_config(task)
    stage = "sft-matched" if name.endswith("-sft-matched") else stage
    assert printed.trained_alike(recorded, stage) == {}, name
    if record["kind"] == "rl":
        used = GRPOConfig.from_dict(record["config"])
        assert replace(printed.grpo(record.get("seed", printed.seed)), threads=used.threads) == used


@pytest.mark.parametrize("task", sorted(p.parent.name for p in (CHECKPOINTS / "findings").glob("*/findings.json")))
def test_every_shipped_findings_config_is_the_printed_one(task):
    """A findings file's config — training and evaluation settings — is the printed one (run
    settings such as torch threads aside)."""
    data = json.loads((CHECKPOINTS / "findings" / task / "findings.json").read_text(encoding="utf-8"))["config"]
    if task in LEGACY_FINDINGS:
        with pytest.raises(ValueError, match="older pipeline"):
            config_for(task).from_dict(data)
        return
    recorded, printed = config_for(task).from_dict(data), pipeline_config(task)
    differ = {f.name for f in fields(printed) if getattr(printed, f.name) != getattr(recorded, f.name)}
    assert differ <= {f.name for f in fields(printed) if f.metadata["used_by"] == ("run",)}, differ


def test_legacy_records_are_named_and_recognised():
    """What the legacy records are: an older pipeline's config is refused with a reason."""
    records = dict(_records())
    assert set(LEGACY) <= set(records)
    with pytest.raises(ValueError, match="older pipeline"):
        PipelineConfig.from_dict(records["gp-vl-text"]["config"])


def test_vision_records_flat_rl_fields_and_the_moved_text_model_parse():
    """Vision records before `rl` was nested: the flat rl_* fields become the GRPO config the
    trainer built from them; the old path of GP-VL's language model is today's."""
    rec = json.loads((CHECKPOINTS / "gp-vl-rl" / "training.json").read_text())
    cfg = VisionConfig.from_dict(rec["vision_config"])
    assert cfg.text_from == "models/checkpoints/gp-vl-text" and cfg.rl.updates == rec["vision_config"]["rl_updates"]
    assert replace(cfg.grpo(0), threads=1) == replace(GRPOConfig.from_dict(rec["config"]), threads=1)
    with pytest.raises(TypeError, match="no field"):
        VisionConfig.from_dict({**rec["vision_config"], "nonsense": 1})


@pytest.mark.parametrize("task", [*TRAINING, *VISION_TRAINING])
def test_print_config_prints_the_resolved_config_of_every_task(task, capsys):
    from app.cli import main

    for quick in (False, True):
        assert main(["train", "pipeline", "--task", task, "--print-config", *(["--quick"] if quick else [])]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed == json.loads(json.dumps(asdict(pipeline_config(task, quick=quick))))
        assert config_for(task).from_dict(printed) == pipeline_config(task, quick=quick)
    assert main(["train", "vision" if task in VISION_TRAINING else "pipeline", "--task", task, "--explain"]) == 0
    out = capsys.readouterr().out
    assert all(f"{f.name} = " in out for f in fields(config_for(task)))


@pytest.mark.parametrize("cls", [PipelineConfig, VisionConfig, GRPOConfig])
def test_every_hyper_parameter_is_documented_where_declared(cls):
    """CleanRL's standard: each field says what it means, and what reads it."""
    for name, text in docs(cls).items():
        assert len(text) > 8, (cls.__name__, name)
    for f in fields(cls):
        assert set(f.metadata["used_by"]) <= {"all", "model", "eval", "run", *LINEAGE}, f.name


def test_one_preset_mechanism_reads_the_training_task():
    """A task's values come from its training entry's preset (full, quick), then explicit changes;
    the pipeline config class is the task's modality's."""
    assert config_for("gp-l") is PipelineConfig and config_for("virl-vl") is VisionConfig
    virl = pipeline_config("virl-vl")
    assert virl.text_from == VISION_TRAINING["virl-vl"].pipeline[0]["text_from"] and virl.rl.verify_iter == 2
    assert virl.rl.task == "virl-vl" and virl.grpo(3).seed == 3
    assert pipeline_config("gp-l", quick=True, eval_n=7).eval_n == 7
    assert pipeline_config("gp-l").with_changes(rl={"updates": 3}).rl.updates == 3
    with pytest.raises(ValueError, match="VisionConfig"):
        PipelineConfig.for_task("gp-vl")
    with pytest.raises(ValueError, match="not 'nope'"):
        pipeline_config("nope")


@pytest.mark.parametrize("task", list(TRAINING))
def test_train_rl_prints_the_pipelines_rl_config(task, capsys):
    """`train rl --print-config` prints the GRPO config of the task's pipeline RL stage for the
    training seed, then the flags: `train rl` is that GRPO from any checkpoint."""
    from app.cli import main

    assert main(["train", "rl", "--task", task, "--print-config"]) == 0
    printed = GRPOConfig.from_dict(json.loads(capsys.readouterr().out))
    assert printed == pipeline_config(task).grpo(0) == rl_config(task)
    assert main(["train", "rl", "--task", task, "--quick", "--seed", "2", "--updates", "3", "--threads", "2",
                 "--print-config"]) == 0
    printed = GRPOConfig.from_dict(json.loads(capsys.readouterr().out))
    assert printed == replace(pipeline_config(task, quick=True).grpo(2), updates=3, threads=2)
    assert main(["train", "rl", "--task", task, "--val-unseen", "--print-config"]) == 0
    assert GRPOConfig.from_dict(json.loads(capsys.readouterr().out)) == replace(rl_config(task), val_unseen=True)


def test_training_code_names_no_task():
    """Training code branches on the training entry's properties, never on a task's name: only the
    registry entries (`models.train.tasks`) hold a task name as a value."""
    import ast

    from game.tasks import TASKS

    files = [*sorted((ROOT / "models" / "train").glob("*.py")), ROOT / "app" / "cli" / "train.py"]
    bad = [f"{f.name}:{node.lineno} {node.value!r}" for f in files if f.name != "tasks.py"
           for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
           if isinstance(node, ast.Constant) and node.value in TASKS]
    assert not bad, bad
