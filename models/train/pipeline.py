"""The one staged tiny-model pipeline, for text and vision tasks: base → Init → SFT / RL / SFT-diverse,
several training seeds (text), at CPU scale.

The paper post-trains a *pretrained* model that already reads rules. A tiny model trained from
random weights on the ID task alone has nothing to keep or forget, so this pipeline first builds a
stand-in for pretraining, then mirrors the paper's stages on top of it. One runner trains every
task (`train_pipeline`); what differs per task is declared on its training entry
(`models.train.tasks`: preset, stages, stage corpora, model-card prose) and its config
(`models.train.config`: `PipelineConfig` for a text task, `VisionConfig` for a vision one, each
stage's plan in `sft_plan`):

1. **base** (the "pretrained model"): SFT on a broad synthetic corpus from the fresh model — a text
   task's: a tiny Llama from random weights with a tokenizer trained on the base and ID corpora.
   GP-L (`models.train.gp_corpus`): hands whose rule line states a face-card mapping in many
   phrasings (`models.train.rules_text`: the paper's sentences and a grammar of ordinary-English
   clauses, never the `reworded` split's constructions, never J/Q/K = 11/12/13), plus revision
   examples (a wrong try → the verifier's exact feedback → the corrected answer). V-IRL-L:
   synthetic cities under both action spaces. A vision task's fresh model is its text model grafted
   into a tiny Mllama (`models.train.vision`: GP-VL's base reads cards and stated mappings). No
   stream holds a held-out evaluation instance.
2. **init**: a short SFT on the ID task from the base (or from the fresh model, for a task without
   a base: V-IRL-VL) — the paper's "Init" that gives RL the answer format. Shared by every seed.
3. **sft** (per seed): continued SFT from Init on single-turn ID expert answers (the paper's SFT),
   with dense snapshots (`sft_snapshots`, geometric in steps) so the matched-skill, matched-compute
   and matched-KL lenses compare against real checkpoints, not interpolations.
4. **rl** (per seed): GRPO from Init on the ID task only, multi-turn with the verifier's feedback
   (`models.train.grpo`: per-call credit, no signal from uniform groups, KL to Init, early stop at
   the ID plateau), with snapshots every `rl_snapshot_every` updates.
5. **sft-diverse** (the rebuttal, arXiv 2510.00237; first seed): SFT from Init, half ID answers,
   half stated mappings in varied phrasings.

Every supervised stage runs the one SFT loop (`models.train.sft.fit`), RL the one GRPO.

Layout under `out/` (text): `base/`, `init/`, `sft-diverse/`, and per training seed k `seed-k/sft/`,
`seed-k/rl/`, `seed-k/{sft,rl}-snapshots/step-NNNNN/`; a vision run (one seed): `out/<stage>/`,
stored in bfloat16. Every checkpoint carries `training.json` (resolved config, seed, curves,
compute as model-token passes and approximate FLOPs). `evaluate_stages` scores them with the
protocol's batched executor and writes `findings.json` — a text task's with every lens
(`evaluate_pipeline`, `game.findings`), a vision task's with recognition (`evaluate_vision`) — and
the model cards (`stage_card`).

    sftvsrl train pipeline --task gp-l --out runs/pipeline/gp-l                # every stage, every seed
    sftvsrl train pipeline --task gp-l --stages sft,rl --seeds 1 --no-eval     # one seed (a second process)
    sftvsrl train pipeline --task gp-l --quick --out /tmp/p                    # seconds, for tests
    sftvsrl train pipeline --task virl-vl --print-config                       # the resolved configuration
    sftvsrl train vision --task gp-vl --out runs/vision/gp-vl                  # the same runner, a vision task
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from game.findings import (COMPARISONS, EPISODES_FILE, FINDINGS_FILE, FORMAT, METRIC_WORDS, aggregate_lenses,
                           cell_value, feedback_share, lens_entry, paired_outcomes, seed_lenses, seed_table)
from game.protocol import binomial_se, splits
from game.tasks import get_task

from .common import (Compute, Stopwatch, environment, load_checkpoint, loss_curve, n_params, save_checkpoint,
                     setup_torch)
from .config import STAGES, PipelineConfig, StagedConfig, VisionConfig, config_for
from .data import ChatCodec
from .sft import TextBatches, fit
from .tasks import TRAINING, VISION_TRAINING, training_task

REPO = Path(__file__).resolve().parents[2]

SHARED_STAGES = ("base", "init", "sft-diverse")    # one run (the first seed's), shared by every seed
SEEDED_STAGES = ("sft", "rl")                       # one run per training seed (a `seeded` config's)
TASKS = tuple(TRAINING)                             # the text tasks (`PipelineConfig`)
VISION_TASKS = tuple(VISION_TRAINING)               # the vision tasks (`VisionConfig`)
ID_MAPPING = (10, 10, 10)


def stage_dir(out: "str | Path", stage: str, seed: int | None = None) -> Path:
    """Where a stage's checkpoint lives: shared stages at `out/<stage>`, seeded ones at
    `out/seed-<k>/<stage>` (`seed` None: the shared stages only)."""
    out = Path(out)
    if stage in SEEDED_STAGES or stage == "sft-matched":
        if seed is None:
            raise ValueError(f"{stage} is trained per seed: give the seed")
        return out / f"seed-{seed}" / stage
    return out / stage


def stage_dest(out: "str | Path", cfg: StagedConfig, stage: str, seed: int | None = None) -> Path:
    """A stage's checkpoint under `out` for `cfg`: `stage_dir` for a config with training seeds
    (`seeded`), `out/<stage>` for one that trains every stage once."""
    return stage_dir(out, stage, seed) if cfg.seeded else Path(out) / stage


def base_dir(out: "str | Path", cfg: StagedConfig) -> Path:
    """The base checkpoint the later stages start from: the final base, or its snapshot at
    `cfg.base_snapshot` (one of the snapshots the base stage writes)."""
    step = cfg.base_snapshot if isinstance(cfg, PipelineConfig) else None
    if step is None:
        return stage_dir(out, "base")
    return Path(out) / "base-snapshots" / f"step-{step:05d}"


def base_snapshot_steps(cfg: PipelineConfig) -> list[int]:
    """The base stage's snapshots: its quarters, and `base_snapshot` if that is another step."""
    return cfg.base_snapshot_steps()


# ---------------------------------------------------------------------------------------------
# The stage runner (text and vision)


def build_tokenizer(cfg: PipelineConfig):
    """The compact BPE tokenizer, trained on the base and ID corpora's text only
    (`TrainingTask.pipeline_tokenizer_text`) — never on an OOD prompt."""
    from ..tiny import SPECIAL_TOKENS, train_tokenizer

    task = training_task(cfg.task)
    text = task.pipeline_tokenizer_text(cfg) + [" ".join(SPECIAL_TOKENS)]
    return train_tokenizer(text, cfg.vocab_size, compact=task.tokenizer_split)


def _fresh_model(cfg: StagedConfig, progress: bool) -> tuple[Any, Any, str, dict[str, Any]]:
    """The model a stage without a start trains from: (model, tokenizer or processor, the record's
    `start`, record facts). A text task's: a tiny Llama from random weights with the pipeline's
    tokenizer (`build_tokenizer`); a vision task's: its text model (`text_from`) grafted into a tiny
    Mllama with a fresh vision tower, whose encoder is first pretrained alone when the task
    `pretrains_vision`."""
    if isinstance(cfg, VisionConfig):
        from ..tiny import build_tiny_mllama
        from .vision import pretrain_vision

        text_from = Path(cfg.text_from)
        text_from = text_from if text_from.is_absolute() else REPO / text_from
        with tempfile.TemporaryDirectory() as tmp:
            path = build_tiny_mllama(Path(tmp) / "graft", text_from=text_from, image_size=cfg.image_size,
                                     patch_size=cfg.patch_size, max_image_tiles=1, vision_hidden=cfg.vision_hidden,
                                     vision_layers=cfg.vision_layers, vision_global_layers=cfg.vision_global_layers,
                                     cross_attention_layers=list(cfg.cross_attention_layers), gate=1.0,
                                     init_std=0.02, seed=cfg.seed)
            model, proc = load_checkpoint(path)
        pretraining = None
        if cfg.vision_pretrain_steps and training_task(cfg.task, vision=True).pretrains_vision:
            pretraining = pretrain_vision(model, ChatCodec(proc), steps=cfg.vision_pretrain_steps,
                                          batch_size=cfg.vision_pretrain_batch, lr=cfg.vision_pretrain_lr,
                                          seed=cfg.seed, progress=progress)
        return model, proc, f"grafted from {cfg.text_from}", {"vision_pretraining": pretraining}
    assert isinstance(cfg, PipelineConfig)
    from ..tiny import build_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llama(Path(tmp) / "init", tokenizer=build_tokenizer(cfg),
                                generation={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
                                **cfg.model_kwargs())
        model, tok = load_checkpoint(path)
    return model, tok, "random", {}


def _snapshotter(root: Path, tok, marks: Sequence[int], compute: Compute, record: list) -> Callable:
    """An `on_step` hook that saves a snapshot under `root` at every step in `marks`."""
    at = set(marks)

    def hook(step: int, model) -> None:
        if step in at:
            path = root / f"step-{step:05d}"
            model.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
            record.append({"step": step, "path": str(path), "train_tokens": compute.train_tokens,
                           "infer_tokens": compute.infer_tokens})
    return hook


def run_sft_stage(cfg: StagedConfig, stage: str, start: Path | None, pairs, out: Path, *, steps: int,
                  batch_size: int, lr: float, progress: bool, snapshots: Sequence[int] = (),
                  warmup_steps: int | None = None, seed: int | None = None,
                  prompt_loss: bool = False) -> dict[str, Any]:
    """Train one supervised stage with the SFT loop (`sft.fit`) — from `start`, or from the fresh
    model (`_fresh_model`) when None — with training seed `seed` (the config's by default: data
    order, dropout-free init) on the first `steps * batch_size` of `pairs` (text pairs or
    `vision.Example`s), and save it; a snapshot at every step in `snapshots`."""
    watch = Stopwatch()
    seed = cfg.seed if seed is None else seed
    setup_torch(seed, cfg.threads)
    facts: dict[str, Any] = {}
    if start is None:
        model, tok, begun, facts = _fresh_model(cfg, progress)
    else:
        (model, tok), begun = load_checkpoint(start), str(start)
    codec = ChatCodec(tok)
    compute = Compute()
    snaps: list[dict] = []
    hook = _snapshotter(out.parent / f"{stage}-snapshots", tok, snapshots, compute, snaps) if snapshots else None
    seen = pairs[:steps * batch_size]
    if isinstance(cfg, VisionConfig):
        from .vision import ImageTextBatches

        batches: Any = ImageTextBatches(codec, pairs, steps, batch_size, seed)
    else:
        batches = TextBatches.from_pairs(codec, seen, batch_size, seed, prompt_loss=prompt_loss)
    losses = fit(model, batches, steps=steps, lr=lr,
                 warmup_steps=cfg.warmup_steps if warmup_steps is None else warmup_steps,
                 min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                 desc=stage if seed == cfg.seed else f"{stage} seed {seed}", progress=progress,
                 compute=compute, on_step=hook)
    params = n_params(model)
    record = {"kind": "sft", "stage": stage, "task": cfg.task, "seed": seed, "start": begun,
              "config": asdict(cfg), "parameters": params, "examples": len(seen), "steps": len(losses),
              "lr": lr, "batch_size": batch_size, "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
              "loss_curve": loss_curve(losses), "compute": compute.as_dict(params), "snapshots": snaps}
    if isinstance(cfg, VisionConfig):
        from collections import Counter

        record.update(vision_parameters=n_params(model.model.vision_model),
                      example_kinds=dict(Counter(e.kind for e in seen)),
                      red_suit_examples=sum(any(c is not None and c.suit in "HD" for c in e.slots or ()) for e in seen),
                      vision_pretraining=None)
    record.update(facts)
    record.update(wall_s=round(watch.elapsed(), 1), environment=environment())
    save_checkpoint(model, tok, out, record)
    return record


def run_rl_stage(cfg: StagedConfig, start: Path, out: Path, *, progress: bool, seed: int | None = None) -> dict[str, Any]:
    """GRPO (`models.train.grpo`) from `start` on the ID task (multi-turn, the verifier's feedback)
    with training seed `seed`, a snapshot every `rl_snapshots()` updates (and at 0) when the config
    takes them."""
    from .grpo import train_grpo

    seed = cfg.seed if seed is None else seed
    snaps: list[dict] = []
    every = cfg.rl_snapshots()

    def hook(update: int, model, tok, compute: dict) -> None:
        if update % every == 0:
            path = out.parent / "rl-snapshots" / f"step-{update:05d}"
            model.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
            snaps.append({"step": update, "path": str(path), **compute})

    record = train_grpo(cfg.grpo(seed), start, out, progress=progress, on_update=hook if every else None)
    record.update({"stage": "rl", "seed": seed, cfg.record_key: asdict(cfg), "snapshots": snaps})
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def train_pipeline(cfg: StagedConfig, out: "str | Path", *, stages: Sequence[str] | None = None,
                   seeds: Sequence[int] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the requested stages (default: every stage the task trains, `TrainingTask.stages`) in
    order: base, Init and SFT-diverse once, SFT and RL for every training seed in `seeds` (a seeded
    config's; its `seeds` by default), each from the stage before (Init from the base, or from the
    fresh model when the task has no base; SFT, RL and SFT-diverse from Init), with the stage's plan
    (`sft_plan`) and data (`TrainingTask.stage_pairs`). A stage whose checkpoint exists is kept
    (resumable), so seeds can run in separate processes. A vision task's checkpoints are then
    stored in bfloat16. Returns {stage or "stage@seed": training record}."""
    from .common import read_record

    out = Path(out)
    task = training_task(cfg.task, "staged pipeline", vision=True)
    stages = task.stages if stages is None else tuple(stages)
    unknown = [s for s in stages if s not in task.stages]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; {cfg.task} stages are {', '.join(task.stages)}")
    seeds = tuple(cfg.seeds if seeds is None else seeds) if isinstance(cfg, PipelineConfig) else ()
    records: dict[str, Any] = {}
    init = stage_dest(out, cfg, "init")
    trained: list[Path] = []
    for stage in task.stages:
        if stage not in stages:
            continue
        for seed in (seeds if cfg.seeded and stage in SEEDED_STAGES else (None,)):
            dest = stage_dest(out, cfg, stage, seed)
            key = stage if seed is None else f"{stage}@{seed}"
            if (dest / "training.json").is_file():
                records[key] = read_record(dest)
                continue
            if stage == "rl":
                records[key] = run_rl_stage(cfg, init, dest, progress=progress, seed=seed)
            else:
                plan = cfg.sft_plan(stage)
                start = None if stage == "base" else init if stage != "init" else \
                    base_dir(out, cfg) if "base" in task.stages else None
                pairs = task.stage_pairs(plan["corpus"], plan["steps"] * plan["batch_size"], plan["data_seed"], cfg)
                records[key] = run_sft_stage(cfg, stage, start, pairs, dest, steps=plan["steps"],
                                             batch_size=plan["batch_size"], lr=plan["lr"], progress=progress,
                                             snapshots=plan["snapshots"], warmup_steps=plan["warmup_steps"],
                                             seed=seed, prompt_loss=plan.get("prompt_loss", False))
            trained.append(dest)
    if task.vision:   # after every stage has trained (RL starts from the float32 Init)
        from .vision import store_bfloat16

        for dest in trained:
            store_bfloat16(dest)
    return records


def train_vision(cfg: VisionConfig, out: "str | Path", *, stages: Sequence[str] | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """`train_pipeline` of a vision task (the name `sftvsrl train vision` had)."""
    return train_pipeline(cfg, out, stages=stages, progress=progress)


# ---------------------------------------------------------------------------------------------
# Evaluation: every final checkpoint, every snapshot, every lens


EVAL_MAX_NEW_TOKENS = PipelineConfig.eval_max_new_tokens   # the default reply limit when scoring


def split_result(res: dict[str, Any], headline: str) -> tuple[dict[str, Any], list]:
    """A table cell and the per-instance outcomes of one evaluated split: `value` is the task's
    headline (GP-L episode success, V-IRL-L per-step accuracy) with its binomial SE; outcomes are
    1/0 successes (GP-L) or [correct, calls] per episode (V-IRL-L), what paired comparisons need."""
    cell = {"value": res[headline], "se": res["headline_se"], "metric": headline, "n": len(res["successes"]),
            "success": res["success_rate"], "success_se": res["success_se"],
            "first_try_success": res.get("first_try_success"),
            "solved_after_feedback": feedback_share(res["successes"], res.get("solved_calls") or []),
            "unfinished_replies": res.get("unfinished_replies")}
    if headline == "per_step_accuracy":
        cell.update(steps=res["steps"], correct_steps=res["correct_steps"])
        return cell, res["episode_steps"]
    return cell, res["successes"]


def paired(a: Sequence, b: Sequence) -> dict[str, float]:
    """Paired difference of two models' outcomes on the same instances (`game.findings.paired_outcomes`)."""
    return paired_outcomes(a, b)


def kl_to_init(init_model, model, tok, n: int, seed: int, task: str) -> float:
    """Monte-Carlo KL(Init ‖ model) in nats per reply: replies sampled from Init (T = 1) on `n`
    ID prompts of `task` (its pipeline `id` corpus), log Init(y|x) − log model(y|x) summed over the
    reply tokens, averaged."""
    import torch

    from .evaluate import Turn, generate_batch
    from .grpo import reply_logprobs

    codec = ChatCodec(tok)
    torch.manual_seed(seed)
    prompts = training_task(task).stage_pairs("id", n, seed + 999, PipelineConfig(task=task))
    contexts = [codec.prompt_ids(p[0]) for p in prompts]
    total = 0.0
    for i in range(0, n, 32):
        ctx = contexts[i:i + 32]
        gens = generate_batch(init_model, codec, ctx, max_new_tokens=64, temperature=1.0, top_p=1.0)
        turns = [Turn(0, c, g.ids, 0.0) for c, g in zip(ctx, gens)]
        with torch.no_grad():
            lp_init, mask = reply_logprobs(init_model, turns, codec.pad_id)
            lp_model, _ = reply_logprobs(model, turns, codec.pad_id)
        total += float(((lp_init - lp_model) * mask).sum())
    return total / n


def _flops(params: int, rec: dict) -> float:
    return 2.0 * params * (3 * (rec.get("train_tokens") or 0) + (rec.get("infer_tokens") or 0))


@dataclass(frozen=True)
class EvalJob:
    """One checkpoint to score: every split on its first `n` instances, KL(Init ‖ ·) on
    `kl_prompts` ID prompts, FLOPs from `compute` (token passes recorded at training)."""

    tag: str                          # "init", "sft@1", "sft@1:step-00016", …
    path: str
    n: int
    kl_prompts: int
    episodes: bool = False            # keep every episode (what Inspect shows)
    compute: dict | None = None


def evaluate_job(job: EvalJob, root: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Score one checkpoint (`EvalJob`): cells, outcomes, KL, FLOPs, episodes."""
    import torch

    from .common import read_record
    from .evaluate import evaluate

    torch.set_num_threads(max(1, cfg.threads))
    model, tok = load_checkpoint(job.path)
    init_model, _ = load_checkpoint(stage_dir(root, "init"))
    out: dict[str, Any] = {"tag": job.tag, "cells": {}, "outcomes": {}, "episodes": []}
    for split in cfg.splits:
        res = evaluate(model, tok, cfg.task, split, job.n, seed=cfg.seed, max_new_tokens=cfg.eval_max_new_tokens,
                       keep_episodes=job.episodes)
        out["cells"][split], out["outcomes"][split] = split_result(res, cfg.headline)
        if job.episodes:
            out["episodes"] += [{"split": split, "index": i, **ep} for i, ep in enumerate(res["episodes"])]
    out["kl"] = kl_to_init(init_model, model, tok, job.kl_prompts, cfg.seed, cfg.task) if job.kl_prompts else 0.0
    compute = job.compute if job.compute is not None else (read_record(job.path).get("compute") or {})
    out["compute"] = compute
    out["flops"] = _flops(n_params(model), compute)
    return out


def _job_key(job: EvalJob, root: str, cfg: PipelineConfig) -> str:
    """What a job's result depends on: the job, the weights it scores (their bytes' size and
    modification time, and Init's, which KL is measured against) and the evaluation settings."""
    def stamp(path: Path) -> list:
        f = path / "model.safetensors"
        return [f.stat().st_size, f.stat().st_mtime_ns] if f.is_file() else []

    data = {"job": asdict(job), "weights": stamp(Path(job.path)), "init": stamp(stage_dir(root, "init")),
            "task": cfg.task, "seed": cfg.seed, "splits": list(cfg.splits), "format": FORMAT}
    if cfg.eval_max_new_tokens != EVAL_MAX_NEW_TOKENS:   # keyed only when changed: earlier caches stay valid
        data["max_new_tokens"] = cfg.eval_max_new_tokens
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _job_runner(args) -> dict[str, Any]:
    """`evaluate_job`, kept under `root/eval-cache/` so an interrupted evaluation resumes where it
    stopped and checkpoints already scored (earlier seeds, snapshots) are not scored again."""
    job, root, cfg = args
    cache = Path(root) / "eval-cache" / f"{_job_key(job, root, cfg)}.json.gz"
    if cache.is_file():
        with gzip.open(cache, "rt", encoding="utf-8") as f:
            return json.load(f)
    result = evaluate_job(job, root, cfg)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, cache)
    return result


def _run_jobs(jobs: Sequence[EvalJob], root: Path, cfg: PipelineConfig, workers: int, progress: bool) -> dict[str, dict]:
    from tqdm.auto import tqdm

    args = [(j, str(root), cfg) for j in jobs]
    results: dict[str, dict] = {}
    bar = tqdm(total=len(args), desc="evaluate", disable=not progress, dynamic_ncols=True)
    if workers > 1 and len(args) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for r in pool.imap_unordered(_job_runner, args):
                results[r["tag"]] = r
                bar.update(1)
    else:
        for a in args:
            r = _job_runner(a)
            results[r["tag"]] = r
            bar.update(1)
    bar.close()
    return results


def _snapshot_jobs(rec: dict, stage: str, seed: int, cfg: PipelineConfig) -> list[EvalJob]:
    return [EvalJob(f"{stage}@{seed}:step-{s['step']:05d}", s["path"], cfg.curve_n, min(cfg.kl_prompts, 64),
                    compute={"train_tokens": s.get("train_tokens") or 0, "infer_tokens": s.get("infer_tokens") or 0})
            for s in rec.get("snapshots") or []]


def _point(r: dict, step: int | str) -> dict[str, Any]:
    return {"step": step, "flops": r["flops"], "kl": r["kl"], "outcomes": r["outcomes"],
            **{s: cell_value(c) for s, c in r["cells"].items()}}


def evaluate_pipeline(root: "str | Path", cfg: PipelineConfig, *, seeds: Sequence[int] | None = None,
                      progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Score every trained checkpoint under `root` and write `findings.json` (format 2,
    `game.findings`), `episodes.jsonl.gz` (the shipped seed's and the shared stages' episodes,
    for Inspect) and the model cards. Two phases: (1) the final checkpoints on `eval_n` instances
    per split and every snapshot on `curve_n`; (2) each seed's matched-ID SFT snapshot
    (`sft-matched`) on `eval_n`. `workers` > 1 scores checkpoints in that many processes."""
    from .common import read_record

    root = Path(root)
    seeds = [s for s in (cfg.seeds if seeds is None else seeds)
             if (stage_dir(root, "sft", s) / "config.json").is_file() or (stage_dir(root, "rl", s) / "config.json").is_file()]
    primary = seeds[0] if seeds else cfg.seeds[0]
    jobs: list[EvalJob] = []
    for stage in SHARED_STAGES:
        path = base_dir(root, cfg) if stage == "base" else stage_dir(root, stage)
        if (path / "config.json").is_file():
            jobs.append(EvalJob(stage, str(path), cfg.eval_n, cfg.kl_prompts, episodes=True))
    records: dict[str, dict] = {}
    for seed in seeds:
        for stage in SEEDED_STAGES:
            path = stage_dir(root, stage, seed)
            if not (path / "config.json").is_file():
                continue
            records[f"{stage}@{seed}"] = rec = read_record(path)
            jobs.append(EvalJob(f"{stage}@{seed}", str(path), cfg.eval_n, cfg.kl_prompts, episodes=seed == primary))
            jobs += _snapshot_jobs(rec, stage, seed, cfg)
    results = _run_jobs(jobs, root, cfg, workers, progress)

    curves: dict[str, dict[str, list]] = {}
    per_seed: dict[int, dict] = {}
    matched_jobs: list[EvalJob] = []
    for seed in seeds:
        curves[str(seed)] = {}
        for stage in SEEDED_STAGES:
            pts = sorted((_point(r, int(tag.rsplit("step-", 1)[1])) for tag, r in results.items()
                          if tag.startswith(f"{stage}@{seed}:")), key=lambda p: p["step"])
            curves[str(seed)][stage] = [{k: v for k, v in p.items() if k != "outcomes"} for p in pts]
            if stage == "sft":
                sft_points = pts
        rl, sft = results.get(f"rl@{seed}"), results.get(f"sft@{seed}")
        if rl is None or sft is None:
            continue
        per_seed[seed] = seed_lenses(rl, sft, sft_points, cfg.splits, cfg.curve_n)
        m = per_seed[seed].get("matched_id")
        if m is not None:
            snap = stage_dir(root, "sft", seed).parent / "sft-snapshots" / f"step-{m['sft_step']:05d}"
            snapshots = records[f"sft@{seed}"].get("snapshots") or []
            comp: dict[str, Any] = next((p for p in snapshots if p["step"] == m["sft_step"]), {})
            matched_jobs.append(EvalJob(f"sft-matched@{seed}", str(snap), cfg.eval_n, cfg.kl_prompts,
                                        episodes=seed == primary,
                                        compute={"train_tokens": comp.get("train_tokens") or 0,
                                                 "infer_tokens": comp.get("infer_tokens") or 0}))
    results.update(_run_jobs(matched_jobs, root, cfg, workers, progress))
    for seed in per_seed:
        m, rl = results.get(f"sft-matched@{seed}"), results[f"rl@{seed}"]
        if m is not None:   # the matched-ID lens on the full evaluation of the matched snapshot
            step = per_seed[seed]["matched_id"]["sft_step"]
            per_seed[seed]["matched_id"] = lens_entry(
                rl, m, cfg.splits, sft_step=step, sft_flops=m["flops"], rl_flops=rl["flops"], sft_kl=m["kl"],
                rl_kl=rl["kl"], sft_id=cell_value(m["cells"]["id"]), rl_id=cell_value(rl["cells"]["id"]))

    table: dict[str, dict] = {}
    for tag, r in results.items():
        stage, _, seed_text = tag.partition("@")
        if ":" in tag or (seed_text and int(seed_text) != primary):
            continue
        table[stage] = {**r["cells"], "kl_from_init": r["kl"], "compute": {**r["compute"], "flops": r["flops"]}}
        if stage == "sft-matched":
            table[stage]["step"] = per_seed[primary]["matched_id"]["sft_step"]
    seed_tables = {stage: seed_table({s: results[f"{stage}@{s}"]["cells"] for s in seeds
                                      if f"{stage}@{s}" in results})
                   for stage in (*SEEDED_STAGES, "sft-matched")
                   if any(f"{stage}@{s}" in results for s in seeds)}
    outcomes = {tag.partition("@")[0]: r["outcomes"] for tag, r in results.items()
                if ":" not in tag and (not tag.partition("@")[2] or int(tag.partition("@")[2]) == primary)}
    comparisons = {name: {s: paired_outcomes(outcomes[a][s], outcomes[b][s]) for s in cfg.splits}
                   for name, a, b in COMPARISONS if a in outcomes and b in outcomes}
    spec = get_task(cfg.task)
    findings = {"format": FORMAT, "task": cfg.task, "metric": cfg.headline, "splits": list(cfg.splits),
                "seeds": list(seeds), "primary_seed": primary,
                "protocol": {"episodes_per_split": cfg.eval_n, "curve_episodes": cfg.curve_n,
                             "decoding": "checkpoint default (T=0.6, top-p 0.9)",
                             "splits": {s: spec.split(s).description for s in cfg.splits},
                             "instances": "protocol.instances (the registry's seeded evaluation streams)"},
                "table": table, "seed_table": seed_tables,
                "lenses": aggregate_lenses(per_seed, cfg.splits),
                "lenses_per_seed": {str(k): v for k, v in per_seed.items()},
                "paired": comparisons, "curves": curves, "config": asdict(cfg), "environment": environment()}
    (root / FINDINGS_FILE).write_text(json.dumps(findings, indent=1) + "\n", encoding="utf-8")
    episodes = [{"stage": tag.partition("@")[0], "seed": primary if "@" in tag else None, **ep}
                for tag, r in sorted(results.items()) for ep in r["episodes"]]
    write_episodes(root / EPISODES_FILE, episodes)
    write_stage_cards(root, findings)
    return findings


def evaluate_vision(root: "str | Path", cfg: VisionConfig, *, stages: Sequence[str] = STAGES,
                    progress: bool = True) -> dict[str, Any]:
    """Every stage on every split of the task (the protocol's batched executor, the checkpoint's
    own decoding), in the staged pipeline's findings format (`split_result`:
    each cell's `value` is the task's headline — GP-VL episode success, V-IRL-VL per-step accuracy —
    with its SE, plus per-step accuracy and, for GP-VL, recognition accuracy with SEs), the paired
    comparisons (`COMPARISONS`; GP-VL also of recognition, `paired_recognition`), and
    every evaluated episode; written to `root/findings.json`, `root/episodes.jsonl.gz` (what the
    Findings view links into Inspect) and the stages' model cards."""
    import torch

    from game.protocol import paired_ratio_difference

    from .common import read_record
    from .evaluate import evaluate

    import game.tasks.virl as virl_task

    torch.set_num_threads(max(1, cfg.threads))
    root = Path(root)
    spec = get_task(cfg.task)
    headline = spec.headline
    loaded = {stage: load_checkpoint(root / stage) for stage in training_task(cfg.task, vision=True).stages
              if stage in stages and (root / stage / "config.json").is_file()}
    # split by split, every stage on the same episodes: a V-IRL grid (seconds to draw) is drawn once
    # per split when the grid cache holds a split's rail positions (~7 per episode; a task that
    # draws no grids never reads the cache)
    cache_size = virl_task.GRID_CACHE
    virl_task.GRID_CACHE = max(cache_size, 8 * cfg.eval_n + 16)
    try:
        results = {(split, stage): evaluate(model, proc, cfg.task, split, cfg.eval_n, seed=cfg.seed,
                                            max_new_tokens=cfg.eval_max_new_tokens, progress=progress,
                                            keep_episodes=True)
                   for split in splits(cfg.task) for stage, (model, proc) in loaded.items()}
    finally:
        virl_task.GRID_CACHE = cache_size
    table: dict[str, Any] = {}
    outcomes: dict[str, dict[str, list]] = {}
    recognition: dict[str, dict[str, list]] = {}
    episodes: list[dict] = []
    for stage in loaded:
        row: dict[str, Any] = {}
        outcomes[stage], recognition[stage] = {}, {}
        for split in splits(cfg.task):
            res = results[(split, stage)]
            row[split], outcomes[stage][split] = split_result(res, headline)
            row[split].update(per_step_accuracy=res["per_step_accuracy"], per_step_se=res["per_step_se"],
                              steps=res["steps"], outcomes=res["outcomes"])
            if spec.recognition:
                row[split].update(recognition=res["recognition_accuracy"],
                                  recognition_se=binomial_se(res["recognition_accuracy"], res["steps"]))
                recognition[stage][split] = res["episode_recognition"]
            episodes += [{"stage": stage, "split": split, "index": i, **ep} for i, ep in enumerate(res["episodes"])]
        row["compute"] = read_record(root / stage).get("compute")
        table[stage] = row
    comparisons = {name: {s: paired(outcomes[a][s], outcomes[b][s]) for s in splits(cfg.task)}
                   for name, a, b in COMPARISONS if a in outcomes and b in outcomes}
    findings: dict[str, Any] = {"task": cfg.task, "metric": headline,
                "protocol": {"episodes_per_split": cfg.eval_n, "decoding": "checkpoint default (T=0.6, top-p 0.9)",
                             "splits": {s: spec.split(s).description for s in splits(cfg.task)},
                             "instances": "protocol.instances (GP-VL: seed-42 vl_id_black / vl_rule_ood_black / "
                                          "vl_visual_ood_red hands; V-IRL-VL: episode i = route i mod R, seed i)",
                             "per_step_accuracy": "correct calls / calls (the paper's V-IRL metric), SE over calls"},
                "table": table, "paired": comparisons, "config": asdict(cfg), "environment": environment()}
    if spec.recognition:
        findings["protocol"]["recognition"] = ("1 - calls with wrong cards / calls in the multi-turn evaluation "
                                               "(paper §5.3), SE over calls; paired: pooled per episode")
        findings["paired_recognition"] = {
            name: {s: paired_ratio_difference(recognition[a][s], recognition[b][s]) for s in splits(cfg.task)}
            for name, a, b in COMPARISONS if a in recognition and b in recognition}
    (root / "findings.json").write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")
    write_episodes(root / EPISODES_FILE, episodes)
    write_stage_cards(root, findings)
    return findings


def evaluate_stages(root: "str | Path", cfg: StagedConfig, *, progress: bool = True, workers: int = 1,
                    seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Score every trained stage under `root` and write `findings.json`, the episodes and the
    model cards: a text task's with every lens over its training seeds (`evaluate_pipeline`), a
    vision task's on every split with recognition where the task has it (`evaluate_vision`)."""
    if isinstance(cfg, VisionConfig):
        return evaluate_vision(root, cfg, progress=progress)
    assert isinstance(cfg, PipelineConfig)
    return evaluate_pipeline(root, cfg, seeds=seeds, progress=progress, workers=workers)


def write_episodes(path: Path, episodes: Sequence[dict]) -> None:
    """The evaluated episodes of the shipped checkpoints, one JSON object per line (stage, seed,
    split, index in the split's instance list, task, params, instance_key, success, steps),
    gzipped deterministically (no timestamp) so a re-run with the same results is byte-identical."""
    import gzip

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for ep in episodes:
            gz.write((json.dumps(ep, separators=(",", ":")) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Model cards


def stage_card(stage: str, findings: dict[str, Any], record: dict[str, Any]) -> str:
    """The model card (README.md) of one pipeline stage, text or vision: what it saw, what it never
    saw (the task's `stage_text`), how it was trained, and its row of the table (a text task's:
    the headline with the KL to Init, the seed spread and the command that made it; a vision
    task's: episode success beside recognition, or per-step accuracy beside episode success)."""
    cfg = findings.get("config") or {}
    task = findings["task"]
    entry = training_task(task, vision=True)
    facts = dict(cfg, task=task, label=entry.label, base_examples=cfg.get("base_steps", 0) * cfg.get("base_batch", 0),
                 init_examples=cfg.get("init_steps", 0) * cfg.get("sft_batch", 0),
                 sft_examples=cfg.get("sft_steps", 0) * cfg.get("sft_batch", 0),
                 read_pct=100 * cfg.get("base_read_share", 0),
                 cross_attention_layers=tuple(cfg.get("cross_attention_layers") or ()))  # as trained: (1, 3)
    if isinstance(cfg.get("rl"), dict):   # (older vision records: flat rl_* fields, already facts)
        rl = cfg["rl"]
        facts.update({f"rl_{k}": v for k, v in rl.items()})
        facts.update(rl_hands=rl.get("hands_per_update"), rl_group=rl.get("group_size"), rl_kl=rl.get("kl_coef"))
    facts.update(seeds=", ".join(map(str, findings.get("seeds") or [])))
    if stage == "sft-matched":
        facts["matched_step"] = findings["table"][stage].get("step")
    role, saw, never = entry.stage_text[stage]
    row = findings["table"].get(stage, {})
    params = record.get("parameters") or 0
    head = [f"# {task}-{stage}: {role}", "", f"A ~{params / 1e6:.1f} M-parameter {entry.card_model.format(**facts)}", "",
            f"**Saw:** {saw.format(**facts)}", "",
            *([f"**Checkpoint:** the base run's snapshot at step {cfg['base_snapshot']:,} of "
               f"{cfg.get('base_steps', 0):,} (`base_snapshot`, chosen so that Init leaves room to learn the ID task; "
               "every later stage starts from this one).", ""] if stage == "base" and cfg.get("base_snapshot") else []),
            f"**Never saw:** {never}", ""]
    evaluation = (f"Evaluation: the protocol's batched executor, {findings['protocol']['episodes_per_split']} "
                  f"episodes per split, {findings['protocol']['decoding']}")
    if entry.vision:
        compute = record.get("compute") or {}
        if get_task(task).recognition:
            table = ["| split | episode success | recognition accuracy (per call) |", "|---|---|---|",
                     *[f"| {s} | {pct(row[s]['success'], row[s]['se'])} (n = {row[s]['n']}) | "
                       f"{pct(row[s]['recognition'], row[s]['recognition_se'])} ({row[s]['steps']} calls) |"
                       for s in splits(task) if s in row]]
        else:
            table = ["| split | per-step accuracy (± SE over calls) | episode success |", "|---|---|---|",
                     *[f"| {s} | {pct(row[s]['per_step_accuracy'], row[s]['per_step_se'])} ({row[s]['steps']} calls) | "
                       f"{pct(row[s]['success'], row[s].get('success_se', row[s]['se']))} (n = {row[s]['n']}) |"
                       for s in splits(task) if s in row]]
        lines = [*head, f"**Training:** {record.get('wall_s', '?')} s wall on {_threads(record)}; "
                 f"{compute.get('train_tokens', 0):,} trained token positions, {compute.get('infer_tokens', 0):,} "
                 "forward-only (`training.json`).", "", *table, "", f"{evaluation} (`findings.json`)."]
        return "\n".join(lines) + "\n"
    compute = row.get("compute") or record.get("compute") or {}
    spread = (findings.get("seed_table") or {}).get(stage)
    metric = METRIC_WORDS.get(findings.get("metric", "success_rate"), "episode success")
    lines = [
        *head,
        f"**Training:** {record.get('wall_s', '?')} s wall; {compute.get('train_tokens', 0):,} trained token "
        f"positions, {compute.get('infer_tokens', 0):,} forward-only; ~{compute.get('flops', 0):.2e} FLOPs "
        "(`training.json` has the full record: config, curves, environment).", "",
        f"| split | {metric} (± binomial SE) |", "|---|---|",
        *[f"| {s} | {100 * cell_value(row[s]):.1f} ± {100 * row[s]['se']:.1f} % (n = {row[s]['n']} episodes"
          + (f", {row[s]['steps']} steps" if "steps" in row[s] else "") + ") |"
          for s in splits(task) if s in row],
        "", f"KL(Init ‖ this model) on ID prompts: {row.get('kl_from_init', 0):.3f} nats per reply.", "",
        *([f"This is training seed {findings.get('primary_seed')}; over the {len(findings.get('seeds') or [])} "
           f"training seeds ({', '.join(map(str, findings.get('seeds') or []))}) the same stage scored: "
           + "; ".join(f"{s} {100 * v['mean']:.1f} % (seeds " + ", ".join(f"{100 * x:.1f}" for x in v['values'].values())
                       + ")" for s, v in spread.items()) + ".", ""] if spread else []),
        f"{evaluation}, made by `sftvsrl train pipeline --task {task}` (`findings.json`).",
    ]
    return "\n".join(lines) + "\n"


def _threads(record: dict[str, Any]) -> str:
    """How many CPU threads trained the stage, in words (its record's environment)."""
    n = (record.get("environment") or {}).get("threads") or (record.get("config") or {}).get("threads") or 1
    return "one CPU thread" if n == 1 else f"{n} CPU threads"


def pct(x: float, se: float) -> str:
    return f"{100 * x:.1f} ± {100 * se:.1f} %"


def stage_path(root: "str | Path", findings: dict[str, Any], stage: str) -> Path:
    """The checkpoint directory of a table row: a shared stage, the primary seed's SFT/RL, or the
    primary seed's matched-ID SFT snapshot (`sft-matched`)."""
    primary = findings.get("primary_seed", 0)
    if stage == "sft-matched":
        return stage_dir(root, "sft", primary).parent / "sft-snapshots" / f"step-{findings['table'][stage]['step']:05d}"
    cfg = config_for(findings["task"]).from_dict(findings["config"])
    if not cfg.seeded:
        return Path(root) / stage
    if stage == "base":
        return base_dir(root, cfg)
    return stage_dir(root, stage, primary if stage in SEEDED_STAGES else None)


def write_stage_cards(root: "str | Path", findings: dict[str, Any]) -> None:
    """README.md (the model card) in every evaluated stage's checkpoint directory."""
    from .common import read_record

    primary = findings.get("primary_seed", 0)
    for stage in findings["table"]:
        rec = read_record(stage_dir(root, "sft", primary)) if stage == "sft-matched" else \
            read_record(stage_path(root, findings, stage))
        stage_path(root, findings, stage).joinpath("README.md").write_text(stage_card(stage, findings, rec),
                                                                          encoding="utf-8")


SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "training.json", "README.md",
                 "processor_config.json")   # (a vision checkpoint's image processor)


def ship_pipeline(root: "str | Path", dest: "str | Path") -> list[Path]:
    """Copy an evaluated run into the shipped layout: every row of its table (the primary seed's
    SFT / RL / matched snapshot, the shared stages) to `dest/<task>-<stage>/` with its model card,
    and findings.json + the episodes file to `dest/findings/<task>/`. What ships is exactly what the
    table measured (the same files, byte for byte). Returns the checkpoint folders written."""
    import shutil

    root, dest = Path(root), Path(dest)
    findings = json.loads((root / FINDINGS_FILE).read_text(encoding="utf-8"))
    task = findings["task"]
    written = []
    for stage in findings["table"]:
        src, out = stage_path(root, findings, stage), dest / f"{task}-{stage}"
        if not (src / "README.md").is_file():
            raise FileNotFoundError(f"{src} has no model card: evaluate the run first (write_stage_cards)")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name in SHIPPED_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
        if stage in ("sft-matched", "base") and not (out / "training.json").is_file():
            # a snapshot has no record of its own: its run's (the card names the step)
            run = stage_dir(root, "sft", findings.get("primary_seed", 0)) if stage == "sft-matched" \
                else stage_dir(root, "base")
            shutil.copy2(run / "training.json", out / "training.json")
        record = out / "training.json"
        if record.is_file():   # run-relative paths in the record (the run's folder is the reader's own)
            text = record.read_text(encoding="utf-8")
            for prefix in {str(root.resolve()), str(root), str((root / "base").resolve().parent)}:
                text = text.replace(json.dumps(prefix + "/")[1:-1], "")
            record.write_text(text, encoding="utf-8")
        written.append(out)
    folder = dest / "findings" / task
    folder.mkdir(parents=True, exist_ok=True)
    for name in (FINDINGS_FILE, EPISODES_FILE):
        shutil.copy2(root / name, folder / name)
    return written
