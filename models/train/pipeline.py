"""The staged tiny-model pipeline: base → Init → SFT / RL / SFT-diverse, several training seeds, at CPU scale.

The paper post-trains a *pretrained* model that already reads rules. A tiny model trained from
random weights on the ID task alone has nothing to keep or forget, so this pipeline first builds a
stand-in for pretraining, then mirrors the paper's stages on top of it (per-task data, presets and
model-card prose in the training registry, `models.train.tasks`):

1. **base** (the "pretrained model"): from random weights, SFT on a broad synthetic corpus. GP-L
   (`models.train.gp_corpus`): hands whose rule line states a face-card mapping in many phrasings
   (`models.train.rules_text`: the paper's sentences and a grammar of ordinary-English clauses,
   never the `reworded` split's constructions, never J/Q/K = 11/12/13), plus revision examples (a
   wrong try → the verifier's exact feedback → the corrected answer). V-IRL-L: synthetic cities
   under both action spaces. No stream holds a held-out evaluation instance.
2. **init**: a short SFT on the ID task from the base (frozen ID prompt, with revisions) — the
   paper's "Init" that gives RL the answer format. Base and Init are shared by every seed.
3. **sft** (per seed): continued SFT from Init on single-turn ID expert answers (the paper's SFT),
   with dense snapshots (`sft_snapshots`, geometric in steps) so the matched-skill, matched-compute
   and matched-KL lenses compare against real checkpoints, not interpolations.
4. **rl** (per seed): GRPO from Init on the ID task only, multi-turn with the verifier's feedback
   (`models.train.grpo`: per-call credit, no signal from uniform groups, KL to Init, early stop at
   the ID plateau), with snapshots every `rl_snapshot_every` updates.
5. **sft-diverse** (the rebuttal, arXiv 2510.00237; first seed): SFT from Init, half ID answers,
   half stated mappings in varied phrasings.

Layout under `out/`: `base/`, `init/`, `sft-diverse/`, and per training seed k `seed-k/sft/`,
`seed-k/rl/`, `seed-k/{sft,rl}-snapshots/step-NNNNN/`. Every checkpoint carries `training.json`
(resolved config, seed, curves, compute as model-token passes and approximate FLOPs).
`evaluate_pipeline` scores them with the protocol's batched executor and writes `findings.json`
with every lens (`game.findings`).

    sftvsrl train pipeline --task gp-l --out runs/pipeline/gp-l                # every stage, every seed
    sftvsrl train pipeline --task gp-l --stages sft,rl --seeds 1 --no-eval     # one seed (a second process)
    sftvsrl train pipeline --task gp-l --quick --out /tmp/p                    # seconds, for tests
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from game.findings import (COMPARISONS, EPISODES_FILE, FINDINGS_FILE, FORMAT, METRIC_WORDS, aggregate_lenses,
                           cell_value, feedback_share, lens_entry, paired_outcomes, seed_lenses, seed_table)
from game.protocol import splits
from game.tasks import get_task

from .common import (Compute, Stopwatch, environment, load_checkpoint, loss_curve, n_params, save_checkpoint,
                     setup_torch)
from .data import ChatCodec
from .grpo import GRPOConfig
from .sft import TextBatches, fit
from .tasks import training_task

STAGES = ("base", "init", "sft", "rl", "sft-diverse")
SHARED_STAGES = ("base", "init", "sft-diverse")    # one run (the first seed's), shared by every seed
SEEDED_STAGES = ("sft", "rl")                       # one run per training seed
TASKS = ("gp-l", "virl-l")               # the tasks the staged pipeline supports
ID_MAPPING = (10, 10, 10)


# ---------------------------------------------------------------------------------------------
# Configuration


def _rl_default() -> GRPOConfig:
    return GRPOConfig(updates=40, hands_per_update=16, group_size=8, verify_iter=5, lr=1e-4, epochs=2,
                      max_new_tokens=64, kl_coef=0.05, threads=1)


@dataclass(frozen=True)
class PipelineConfig:
    """Every knob of the pipeline, with the value the shipped checkpoints used (the task's preset
    in `models.train.tasks` changes some; `sftvsrl train pipeline --print-config` prints them all)."""

    task: str = "gp-l"
    seed: int = 0                     # base, Init, SFT-diverse and the data streams
    seeds: tuple[int, ...] = (0, 1, 2)   # training seeds of SFT and RL (the first one ships)
    # model (a Llama; `models.tiny.build_tiny_llama`)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    vocab_size: int = 1024
    # base: SFT from random weights on the task's base corpus (the stand-in for pretraining)
    base_steps: int = 3000
    base_batch: int = 32
    base_lr: float = 2e-3
    base_warmup_steps: int = 20
    base_face_prob: float = 0.6       # share of base hands forced to hold a face card (GP)
    base_revision: float = 0.35       # share of base examples that revise failed tries (with feedback)
    # the base the later stages start from (and the table's base row): its quarter snapshot at this
    # step, or None for the final one. An Init that already solves every ID hand leaves SFT and RL
    # nothing to learn; the paper's Init has room on ID, so a task may start from an earlier base.
    base_snapshot: int | None = None
    # init: short SFT on the ID task from the base (the answer format RL starts from)
    init_steps: int = 8
    init_lr: float = 2e-4
    init_warmup_steps: int = 1
    init_revision: float = 0.3        # share of Init examples that revise failed tries (with feedback)
    # sft and sft-diverse: continued SFT from init
    sft_steps: int = 400
    sft_batch: int = 32
    sft_lr: float = 5e-4
    sft_snapshots: int = 16           # snapshots along SFT, geometric in steps (dense early: matched lenses)
    # shared SFT optimiser settings
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # rl: GRPO from init (`models.train.grpo.GRPOConfig`; task, seed and threads are the pipeline's)
    rl: GRPOConfig = field(default_factory=_rl_default)
    rl_snapshot_every: int = 4        # updates between RL snapshots (the compute curve)
    # evaluation
    eval_n: int = 500                 # episodes per split for the final checkpoints
    curve_n: int = 234                # episodes per split for each snapshot (the matched lenses)
    kl_prompts: int = 128             # ID prompts for KL(Init ‖ model)
    eval_max_new_tokens: int = 96     # reply token limit when scoring (replies are ~30 GP-L / ~20 V-IRL-L tokens)
    threads: int = 1                  # torch threads per process (1: robust next to other busy processes)

    @classmethod
    def for_task(cls, task: str = "gp-l", *, quick: bool = False, seed: int = 0) -> "PipelineConfig":
        """The shipped configuration of `task` (its training entry's `pipeline` changes), or the
        seconds-long `--quick` one."""
        if task not in TASKS:
            raise ValueError(f"the staged pipeline supports {', '.join(TASKS)}, not {task!r}")
        full, fast = training_task(task).pipeline
        base = cls.quick(seed) if quick else cls(seed=seed)
        return base.with_changes(task=task, **(fast if quick else full))

    def with_changes(self, **changes) -> "PipelineConfig":
        """A copy with `changes`; `rl` may be a dict of `GRPOConfig` field changes."""
        rl = changes.pop("rl", None)
        out = replace(self, **changes)
        if isinstance(rl, dict):
            out = replace(out, rl=replace(out.rl, **rl))
        elif rl is not None:
            out = replace(out, rl=rl)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PipelineConfig":
        """The config recorded in a `training.json` / `findings.json` (unknown keys refused)."""
        data = dict(data)
        rl = data.pop("rl", None)
        if "seeds" in data:
            data["seeds"] = tuple(data["seeds"])
        cfg = cls(**data)
        if isinstance(rl, dict):
            rl = {k: tuple(v) if isinstance(v, list) else v for k, v in rl.items()}
            cfg = replace(cfg, rl=GRPOConfig(**rl))
        return cfg

    @property
    def splits(self) -> tuple[str, ...]:
        """The protocol's splits of the task (GP-L: id, rule-ood, reworded; V-IRL-L: id, rule-ood, streets)."""
        return splits(self.task)

    @property
    def headline(self) -> str:
        """The task's headline metric (`success_rate` or `per_step_accuracy`)."""
        return get_task(self.task).headline

    def grpo(self, seed: int) -> GRPOConfig:
        """The GRPO config of training seed `seed`."""
        return replace(self.rl, task=self.task, seed=seed, threads=self.threads)

    @classmethod
    def quick(cls, seed: int = 0) -> "PipelineConfig":
        """A seconds-long run for tests: a very small model, a handful of steps per stage, two seeds."""
        return cls(seed=seed, seeds=(seed, seed + 1), hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64,
                   vocab_size=700, base_steps=4, base_batch=8, init_steps=2, sft_steps=6, sft_batch=8,
                   sft_snapshots=3, warmup_steps=1,
                   rl=GRPOConfig(updates=2, hands_per_update=2, group_size=2, verify_iter=2, max_new_tokens=24,
                                 epochs=1, val_hands=4, val_every=1, patience=5),
                   rl_snapshot_every=1, eval_n=6, curve_n=4, kl_prompts=4,
                   eval_max_new_tokens=24)   # an untrained model runs every reply to the limit

    def model_kwargs(self) -> dict[str, Any]:
        return dict(hidden=self.hidden, layers=self.layers, heads=self.heads, kv_heads=self.kv_heads,
                    intermediate=self.intermediate, vocab_size=self.vocab_size, max_positions=2048,
                    init_std=0.02, seed=self.seed)


def stage_dir(out: "str | Path", stage: str, seed: int | None = None) -> Path:
    """Where a stage's checkpoint lives: shared stages at `out/<stage>`, seeded ones at
    `out/seed-<k>/<stage>` (`seed` None: the shared stages only)."""
    out = Path(out)
    if stage in SEEDED_STAGES or stage == "sft-matched":
        if seed is None:
            raise ValueError(f"{stage} is trained per seed: give the seed")
        return out / f"seed-{seed}" / stage
    return out / stage


def base_dir(out: "str | Path", cfg: "PipelineConfig") -> Path:
    """The base checkpoint the later stages start from: the final base, or its snapshot at
    `cfg.base_snapshot` (one of the quarter snapshots the base stage writes)."""
    if cfg.base_snapshot is None:
        return stage_dir(out, "base")
    return Path(out) / "base-snapshots" / f"step-{cfg.base_snapshot:05d}"


def base_snapshot_steps(cfg: "PipelineConfig") -> list[int]:
    """The base stage's snapshots: its quarters, and `base_snapshot` if that is another step."""
    steps = {round(cfg.base_steps * i / 4) for i in range(1, 4)}
    if cfg.base_snapshot is not None:
        if not 0 < cfg.base_snapshot < cfg.base_steps:
            raise ValueError(f"base_snapshot must be a step between 1 and {cfg.base_steps - 1}")
        steps.add(cfg.base_snapshot)
    return sorted(steps)


def snapshot_steps(total: int, n: int) -> list[int]:
    """`n` snapshot steps along `total` steps, geometric (dense early, where SFT changes fastest),
    plus step 0 and the last step."""
    if n <= 0 or total <= 0:
        return [0]
    marks = {0, total}
    for i in range(1, n + 1):
        marks.add(max(1, round(total ** (i / n))))
    return sorted(marks)


# ---------------------------------------------------------------------------------------------
# Supervised stages


def build_tokenizer(cfg: PipelineConfig):
    """The compact BPE tokenizer, trained on the base and ID corpora's text only
    (`TrainingTask.pipeline_tokenizer_text`) — never on an OOD prompt."""
    from ..tiny import SPECIAL_TOKENS, train_tokenizer

    task = training_task(cfg.task)
    text = task.pipeline_tokenizer_text(cfg) + [" ".join(SPECIAL_TOKENS)]
    return train_tokenizer(text, cfg.vocab_size, compact=task.tokenizer_split)


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


def run_sft_stage(cfg: PipelineConfig, stage: str, start: Path | None, pairs, out: Path, *, steps: int,
                  batch_size: int, lr: float, progress: bool, snapshots: Sequence[int] = (),
                  warmup_steps: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Train one supervised stage (from `start`, or from random weights when None) with training
    seed `seed` (the config's by default: data order, dropout-free init) and save it; a snapshot
    at every step in `snapshots`."""
    watch = Stopwatch()
    seed = cfg.seed if seed is None else seed
    setup_torch(seed, cfg.threads)
    if start is None:
        from ..tiny import build_tiny_llama

        with tempfile.TemporaryDirectory() as tmp:
            path = build_tiny_llama(Path(tmp) / "init", tokenizer=build_tokenizer(cfg),
                                    generation={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
                                    **cfg.model_kwargs())
            model, tok = load_checkpoint(path)
    else:
        model, tok = load_checkpoint(start)
    compute = Compute()
    snaps: list[dict] = []
    hook = _snapshotter(out.parent / f"{stage}-snapshots", tok, snapshots, compute, snaps) if snapshots else None
    batches = TextBatches.from_pairs(ChatCodec(tok), pairs[:steps * batch_size], batch_size, seed)
    losses = fit(model, batches, steps=steps, lr=lr,
                 warmup_steps=cfg.warmup_steps if warmup_steps is None else warmup_steps,
                 min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                 desc=stage if seed == cfg.seed else f"{stage} seed {seed}", progress=progress,
                 compute=compute, on_step=hook)
    params = n_params(model)
    record = {"kind": "sft", "stage": stage, "task": cfg.task, "seed": seed, "start": str(start) if start else "random",
              "config": asdict(cfg), "parameters": params, "examples": steps * batch_size, "steps": len(losses),
              "lr": lr, "batch_size": batch_size, "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
              "loss_curve": loss_curve(losses), "compute": compute.as_dict(params), "snapshots": snaps,
              "wall_s": round(watch.elapsed(), 1), "environment": environment()}
    save_checkpoint(model, tok, out, record)
    return record


def run_rl_stage(cfg: PipelineConfig, start: Path, out: Path, *, progress: bool, seed: int | None = None) -> dict[str, Any]:
    """GRPO from `start` on the ID task (multi-turn, the verifier's feedback) with training seed
    `seed`, a snapshot every `rl_snapshot_every` updates (and at 0)."""
    from .grpo import train_grpo

    seed = cfg.seed if seed is None else seed
    snaps: list[dict] = []

    def hook(update: int, model, tok, compute: dict) -> None:
        if update % max(1, cfg.rl_snapshot_every) == 0:
            path = out.parent / "rl-snapshots" / f"step-{update:05d}"
            model.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
            snaps.append({"step": update, "path": str(path), **compute})

    record = train_grpo(cfg.grpo(seed), start, out, progress=progress, on_update=hook)
    record.update(stage="rl", seed=seed, pipeline_config=asdict(cfg), snapshots=snaps)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def train_pipeline(cfg: PipelineConfig, out: "str | Path", *, stages: Sequence[str] = STAGES,
                   seeds: Sequence[int] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the requested stages in order (`stage_dir` layout): base, Init and SFT-diverse once,
    SFT and RL for every training seed in `seeds` (the config's by default). A stage whose
    checkpoint exists is kept (resumable), so seeds can run in separate processes. Returns
    {stage or "stage@seed": training record}."""
    from .common import read_record

    out = Path(out)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    seeds = tuple(cfg.seeds if seeds is None else seeds)
    records: dict[str, Any] = {}
    task = training_task(cfg.task)
    init = stage_dir(out, "init")
    for stage in STAGES:
        if stage not in stages:
            continue
        for seed in (seeds if stage in SEEDED_STAGES else (None,)):
            dest = stage_dir(out, stage, seed)
            key = stage if seed is None else f"{stage}@{seed}"
            if (dest / "training.json").is_file():
                records[key] = read_record(dest)
                continue
            if stage == "base":
                pairs = task.stage_pairs("base", cfg.base_steps * cfg.base_batch, cfg.seed + 100, cfg)
                records[key] = run_sft_stage(cfg, stage, None, pairs, dest, steps=cfg.base_steps,
                                             batch_size=cfg.base_batch, lr=cfg.base_lr, progress=progress,
                                             snapshots=base_snapshot_steps(cfg),
                                             warmup_steps=cfg.base_warmup_steps)
            elif stage == "init":
                pairs = task.stage_pairs("init", cfg.init_steps * cfg.sft_batch, cfg.seed + 200, cfg)
                records[key] = run_sft_stage(cfg, stage, base_dir(out, cfg), pairs, dest, steps=cfg.init_steps,
                                             batch_size=cfg.sft_batch, lr=cfg.init_lr, progress=progress,
                                             warmup_steps=cfg.init_warmup_steps)
            elif stage == "sft":
                # every seed sees the same expert answers in its own order (`fit` shuffles by seed)
                pairs = task.stage_pairs("id", cfg.sft_steps * cfg.sft_batch, cfg.seed + 300, cfg)
                records[key] = run_sft_stage(cfg, stage, init, pairs, dest, steps=cfg.sft_steps,
                                             batch_size=cfg.sft_batch, lr=cfg.sft_lr, progress=progress,
                                             snapshots=snapshot_steps(cfg.sft_steps, cfg.sft_snapshots), seed=seed)
            elif stage == "sft-diverse":
                pairs = task.stage_pairs("diverse", cfg.sft_steps * cfg.sft_batch, cfg.seed + 400, cfg)
                records[key] = run_sft_stage(cfg, stage, init, pairs, dest, steps=cfg.sft_steps,
                                             batch_size=cfg.sft_batch, lr=cfg.sft_lr, progress=progress,
                                             snapshots=snapshot_steps(cfg.sft_steps, 6))
            elif stage == "rl":
                records[key] = run_rl_stage(cfg, init, dest, progress=progress, seed=seed)
    return records


# ---------------------------------------------------------------------------------------------
# Evaluation: every final checkpoint, every snapshot, every lens


EVAL_MAX_NEW_TOKENS = PipelineConfig.eval_max_new_tokens   # the default reply limit when scoring (vision too)


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


def kl_to_init(init_model, model, tok, n: int, seed: int = 0, task: str = "gp-l") -> float:
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
    """The model card (README.md) of one pipeline stage: what it saw, what it never saw, how it
    was trained, and its row of the five-way table with the command that made it."""
    cfg = findings.get("config") or {}
    task = findings.get("task", "gp-l")
    entry = training_task(task)
    facts = dict(cfg, base_examples=cfg.get("base_steps", 0) * cfg.get("base_batch", 0),
                 init_examples=cfg.get("init_steps", 0) * cfg.get("sft_batch", 0),
                 sft_examples=cfg.get("sft_steps", 0) * cfg.get("sft_batch", 0))
    rl: dict[str, Any] = cfg["rl"] if isinstance(cfg.get("rl"), dict) else {}
    facts.update({f"rl_{k}": v for k, v in rl.items()})
    facts.update(rl_hands=rl.get("hands_per_update"), rl_group=rl.get("group_size"),
                 rl_kl=rl.get("kl_coef"), seeds=", ".join(map(str, findings.get("seeds") or [])))
    if stage == "sft-matched":
        facts["matched_step"] = findings["table"][stage].get("step")
    role, saw, never = entry.stage_text[stage]
    row = findings["table"].get(stage, {})
    compute = row.get("compute") or record.get("compute") or {}
    spread = (findings.get("seed_table") or {}).get(stage)
    metric = METRIC_WORDS.get(findings.get("metric", "success_rate"), "episode success")
    params = record.get("parameters") or 0
    lines = [
        f"# {task}-{stage}: {role}", "",
        f"A ~{params / 1e6:.1f} M-parameter Llama (`models.tiny.build_tiny_llama`) trained on a CPU by the staged "
        f"pipeline (`sftvsrl train pipeline --task {task}`, `models/train/pipeline.py`). It reads the paper's exact "
        f"{entry.label} prompt and answers in the paper's format.", "",
        f"**Saw:** {saw.format(**facts)}", "",
        *([f"**Checkpoint:** the base run's snapshot at step {cfg['base_snapshot']:,} of {cfg.get('base_steps', 0):,} "
           "(`base_snapshot`, chosen so that Init leaves room to learn the ID task; "
           "every later stage starts from this one).", ""] if stage == "base" and cfg.get("base_snapshot") else []),
        f"**Never saw:** {never}", "",
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
        f"Evaluation: the protocol's batched executor, {findings['protocol']['episodes_per_split']} episodes per "
        f"split, {findings['protocol']['decoding']}, made by `sftvsrl train pipeline --task {task}` "
        "(`findings.json`).",
    ]
    return "\n".join(lines) + "\n"


def stage_path(root: "str | Path", findings: dict[str, Any], stage: str) -> Path:
    """The checkpoint directory of a table row: a shared stage, the primary seed's SFT/RL, or the
    primary seed's matched-ID SFT snapshot (`sft-matched`)."""
    primary = findings.get("primary_seed", 0)
    if stage == "sft-matched":
        return stage_dir(root, "sft", primary).parent / "sft-snapshots" / f"step-{findings['table'][stage]['step']:05d}"
    if stage == "base":
        return base_dir(root, PipelineConfig.from_dict(findings["config"]))
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
                 "tokenizer_config.json", "chat_template.jinja", "training.json", "README.md")


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
