"""The staged tiny-model pipeline for GP-L and V-IRL-L: base → Init → SFT / RL / SFT-diverse, at CPU scale.

The paper post-trains a *pretrained* model that already reads rules. A tiny model trained from
random weights on the ID task alone has nothing to keep or forget, so this pipeline first builds a
stand-in for pretraining, then mirrors the paper's stages on top of it:

1. **base** (the "pretrained model"): from random weights, SFT on a broad synthetic corpus of GP-L
   hands whose rule line states a random face-card mapping — J/Q/K = (a, b, c) with a, b, c in
   6..13 — in the paper's exact prompt template (`mapped_prompt`). It never sees the evaluation's
   OOD rule J/Q/K = 11/12/13 (`OOD_MAPPING` is excluded), so reading the rule line is general
   knowledge it may or may not have acquired, exactly what rule-OOD evaluation probes.
2. **init**: a short SFT on the ID task (frozen ID prompt, J/Q/K = 10) from the base — the paper's
   "Init" checkpoint that gives RL the answer format.
3. **sft**: continued SFT from Init on ID expert answers with the frozen ID prompt (the paper's SFT).
4. **rl**: GRPO from Init on the ID task only, multi-turn with the verifier's feedback
   (`models.train.grpo`), its compute matched to SFT's (`compute` in every record).
5. **sft-diverse** (the rebuttal, arXiv 2510.00237): SFT from Init on ID-target hands whose prompts
   state varied mappings (never the OOD one), same steps as SFT.

V-IRL-L follows the same stages (`--task virl-l`); what differs per task is the training
registry's (`models.train.tasks`: `pipeline` config changes, `stage_pairs`, `stage_text`). Its base
walks 8 synthetic training cities (`game.virl.cities`: Helsinki's street graph rotated/mirrored,
every place renamed) under both action spaces, so "read the action-space line" is general
knowledge it may have; it never sees a Helsinki route, hence never the rule-OOD configuration
(relative actions on the Helsinki routes). Init and SFT train on Helsinki ID routes with absolute
actions, RL plays them, SFT-diverse mixes them with other-city episodes of both action spaces. The
headline is the task's (`game.tasks`: GP-L episode success, V-IRL-L per-step accuracy).

Every stage is a Hugging Face checkpoint with `training.json` (config, environment, curves, compute
as model-token passes and approximate FLOPs). `evaluate_stages` scores them all with the protocol's
batched executor (`models.train.evaluate`): ID and rule-OOD episode success (± binomial SE), a
paired RL-vs-SFT difference on the same hands, and KL(Init ‖ model) on ID prompts. Snapshots along
SFT and RL give the success-vs-compute curves (the shape of the paper's Figure 5).

    sftvsrl train pipeline --task gp-l --out runs/pipeline/gp-l           # full run (~1-2 h on 2 cores)
    sftvsrl train pipeline --task gp-l --quick --out /tmp/p               # seconds, for tests
    sftvsrl train pipeline --task virl-l --out runs/pipeline/virl-l       # V-IRL-L
"""
from __future__ import annotations

import json
import random
import tempfile
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Callable, Sequence

from game.gp.cards import Rule
from game.protocol import paired_difference, paired_ratio_difference, splits
from game.tasks import get_task

from ..prompts import FACE_CARD_MSG, gp_prompt, response_eqn
from .common import Stopwatch, cosine_lr, environment, load_checkpoint, n_params, save_checkpoint, setup_torch
from .data import ChatCodec, expert_formula, sft_pairs
from .tasks import training_task

STAGES = ("base", "init", "sft", "rl", "sft-diverse")
TASKS = ("gp-l", "virl-l")               # the tasks the staged pipeline supports

# ---------------------------------------------------------------------------------------------
# The base corpus: the paper's prompt with a stated face-card mapping

FACE_VALUES = tuple(range(6, 14))        # what J, Q and K may count as in the base corpus
OOD_MAPPING = (11, 12, 13)               # the evaluation's rule-OOD mapping: never in any training data
ID_MAPPING = (10, 10, 10)
_RANK_LABEL = {1: "A", 11: "J", 12: "Q", 13: "K"}


def mapping_message(mapping: Sequence[int]) -> str:
    """The rule line's face-card clause for J/Q/K = `mapping`, in the paper's two phrasings."""
    a, b, c = (int(v) for v in mapping)
    if a == b == c == 10:
        return FACE_CARD_MSG[Rule.FACE10]
    return f"'J', 'Q', and 'K' count as '{a}', '{b}', and '{c}' respectively."


def mapped_prompt(labels: Sequence[str], mapping: Sequence[int], target: int = 24) -> str:
    """The paper-exact GP-L prompt with the face-card clause for `mapping` in both of its places.

    `mapped_prompt(labels, (11, 12, 13))` is byte-identical to the rule-OOD prompt and
    `mapped_prompt(labels, (10, 10, 10))` to the ID prompt (tested)."""
    return gp_prompt(labels, Rule.FACE10, target).replace(FACE_CARD_MSG[Rule.FACE10], mapping_message(mapping))


def base_mappings() -> list[tuple[int, int, int]]:
    """Every mapping the base corpus may state: (a, b, c) in 6..13, except the OOD one (511)."""
    return [m for m in product(FACE_VALUES, repeat=3) if m != OOD_MAPPING]


def mapping_pairs(n: int, seed: int, mappings: Sequence[tuple[int, int, int]], *, face_prob: float = 0.5,
                  target: int = 24) -> list[tuple[str, str]]:
    """`n` (prompt, expert answer) pairs: a mapping drawn uniformly from `mappings`, four ranks
    i.i.d. in 1..13 (with probability `face_prob` one is forced to J/Q/K so the mapping matters),
    values mapped, redrawn until the solver finds a float-exact formula."""
    rng = random.Random(f"mapping-pairs:{seed}")
    out: list[tuple[str, str]] = []
    while len(out) < n:
        mapping = mappings[rng.randrange(len(mappings))]
        ranks = [rng.randint(1, 13) for _ in range(4)]
        if rng.random() < face_prob and max(ranks) <= 10:
            ranks[rng.randrange(4)] = rng.randint(11, 13)
        values = [r if r <= 10 else mapping[r - 11] for r in ranks]
        formula = expert_formula(values, target)
        if formula is None:
            continue
        labels = [_RANK_LABEL.get(r, str(r)) for r in ranks]
        out.append((mapped_prompt(labels, mapping, target), response_eqn(labels, values, formula, target)))
    return out


def id_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` in-distribution expert pairs: frozen ID prompt (J/Q/K = 10), the canonical formula."""
    return [(p.prompt, p.answer) for p in sft_pairs(n, seed)]


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class PipelineConfig:
    """Every knob of the pipeline, with the value the shipped checkpoints used."""

    task: str = "gp-l"
    seed: int = 0
    # model (a Llama of ~0.9 M parameters; `models.tiny.build_tiny_llama`)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    vocab_size: int = 1024
    # base: SFT from random weights on mapping-stated hands (the stand-in for pretraining)
    base_steps: int = 3000
    base_batch: int = 32
    base_lr: float = 2e-3
    base_face_prob: float = 0.5       # share of base hands forced to hold a face card
    # init: short SFT on the ID task from the base (the answer format RL starts from)
    init_steps: int = 8               # 256 hands: enough to learn the ID phrasing, short of memorising
    init_lr: float = 2e-4
    init_warmup_steps: int = 1
    # sft and sft-diverse: continued SFT from init
    sft_steps: int = 400
    sft_batch: int = 32
    sft_lr: float = 5e-4
    # shared SFT optimiser settings
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # rl: GRPO from init (see `models.train.grpo.GRPOConfig` for the meaning of each field)
    rl_updates: int = 30
    rl_hands: int = 8
    rl_group: int = 8
    rl_verify_iter: int = 5
    rl_lr: float = 1e-4
    rl_epochs: int = 2
    rl_max_new_tokens: int = 48
    # evaluation
    eval_n: int = 500                 # episodes per split for the final table
    curve_n: int = 100                # episodes per split for each snapshot along training
    snapshots: int = 6                # snapshots along SFT / RL (plus the start)
    kl_prompts: int = 128             # ID prompts for KL(Init ‖ model)
    threads: int = 1                  # torch threads per process (1: robust next to other busy processes)

    @classmethod
    def for_task(cls, task: str = "gp-l", *, quick: bool = False, seed: int = 0) -> "PipelineConfig":
        """The shipped configuration of `task` (its training entry's `pipeline` changes), or the
        seconds-long `--quick` one."""
        if task not in TASKS:
            raise ValueError(f"the staged pipeline supports {', '.join(TASKS)}, not {task!r}")
        full, fast = training_task(task).pipeline
        if quick:
            return replace(cls.quick(seed), task=task, **fast)
        return cls(task=task, seed=seed, **full)

    @property
    def splits(self) -> tuple[str, ...]:
        """The protocol's splits of the task (GP-L: id, rule-ood; V-IRL-L: id, rule-ood, streets)."""
        return splits(self.task)

    @property
    def headline(self) -> str:
        """The task's headline metric (`success_rate` or `per_step_accuracy`)."""
        return get_task(self.task).headline

    @classmethod
    def quick(cls, seed: int = 0) -> "PipelineConfig":
        """A seconds-long run for tests: a very small model, a handful of steps per stage."""
        return cls(seed=seed, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab_size=700,
                   base_steps=4, base_batch=8, init_steps=2, sft_steps=4, sft_batch=8, warmup_steps=1,
                   rl_updates=2, rl_hands=2, rl_group=2, rl_verify_iter=2, rl_max_new_tokens=24, rl_epochs=1,
                   eval_n=6, curve_n=4, snapshots=2, kl_prompts=4)

    def model_kwargs(self) -> dict[str, Any]:
        return dict(hidden=self.hidden, layers=self.layers, heads=self.heads, kv_heads=self.kv_heads,
                    intermediate=self.intermediate, vocab_size=self.vocab_size, max_positions=2048,
                    init_std=0.02, seed=self.seed)


# ---------------------------------------------------------------------------------------------
# Compute accounting: model-token passes and approximate FLOPs


@dataclass
class Compute:
    """Token positions run through the model: `train` (forward + backward, ~3× a forward) and
    `infer` (forward only: generation and log-prob passes). FLOPs ≈ 2·N·(3·train + infer)."""

    train_tokens: int = 0
    infer_tokens: int = 0

    def flops(self, params: int) -> float:
        return 2.0 * params * (3 * self.train_tokens + self.infer_tokens)

    def as_dict(self, params: int) -> dict[str, Any]:
        return {"train_tokens": self.train_tokens, "infer_tokens": self.infer_tokens,
                "flops": self.flops(params)}


# ---------------------------------------------------------------------------------------------
# Supervised stages


def fit(model, tok, pairs: Sequence[tuple[str, str]], *, steps: int, batch_size: int, lr: float,
        warmup_steps: int, min_lr_ratio: float, weight_decay: float, grad_clip: float, seed: int,
        desc: str, progress: bool, compute: Compute,
        on_step: Callable[[int, Any], None] | None = None) -> list[float]:
    """Cross-entropy on the answers of `steps * batch_size` (prompt, answer) pairs, one pass, AdamW
    with warm-up and cosine decay. `on_step(step, model)` runs after optimizer step `step` (1-based)
    and once with step 0 before training (snapshots). Returns the per-step losses."""
    import torch
    from tqdm.auto import tqdm

    from .sft import _batches, common_prefix, shared_prefix_loss

    codec = ChatCodec(tok)
    examples = [codec.sft_example(p, a) for p, a in pairs[:steps * batch_size]]
    random.Random(seed).shuffle(examples)
    prefix = torch.tensor(common_prefix(examples))
    examples = [(x[len(prefix):], y[len(prefix):]) for x, y in examples]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, warmup_steps, min_lr_ratio))
    if on_step:
        on_step(0, model)
    model.train()
    losses: list[float] = []
    bar = tqdm(_batches(examples, batch_size, codec.pad_id), total=steps, desc=desc, disable=not progress,
               dynamic_ncols=True)
    for step, (ids, mask, labels) in enumerate(bar, start=1):
        loss = shared_prefix_loss(model, prefix, ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        compute.train_tokens += len(prefix) + int(mask.sum())
        if step % 5 == 0 or step == steps:
            recent = losses[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
        if on_step:
            model.eval()
            on_step(step, model)
            model.train()
    bar.close()
    model.eval()
    return losses


def _curve(losses: list[float], every: int = 25) -> list[float]:
    return [round(sum(losses[i:i + every]) / len(losses[i:i + every]), 5) for i in range(0, len(losses), every)]


def build_tokenizer(cfg: PipelineConfig):
    """The compact BPE tokenizer, trained on the base and ID corpora's text only
    (`TrainingTask.pipeline_tokenizer_text`) — never on an OOD prompt."""
    from ..tiny import SPECIAL_TOKENS, train_tokenizer

    task = training_task(cfg.task)
    text = task.pipeline_tokenizer_text(cfg) + [" ".join(SPECIAL_TOKENS)]
    return train_tokenizer(text, cfg.vocab_size, compact=task.tokenizer_split)


def _snapshotter(root: Path, tok, steps: int, n: int, compute: Compute, record: list) -> Callable:
    """An `on_step` hook that saves `n` evenly spaced snapshots (and step 0) under `root`."""
    marks = sorted({0, *(round(steps * (i + 1) / n) for i in range(n))})

    def hook(step: int, model) -> None:
        if step in marks:
            path = root / f"step-{step:05d}"
            model.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
            record.append({"step": step, "path": str(path), "train_tokens": compute.train_tokens,
                           "infer_tokens": compute.infer_tokens})
    return hook


def run_sft_stage(cfg: PipelineConfig, stage: str, start: Path | None, pairs, out: Path, *, steps: int,
                  batch_size: int, lr: float, progress: bool, snapshots: bool = False,
                  warmup_steps: int | None = None) -> dict[str, Any]:
    """Train one supervised stage (from `start`, or from random weights when None) and save it."""
    watch = Stopwatch()
    setup_torch(cfg.seed, cfg.threads)
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
    hook = _snapshotter(out.parent / f"{stage}-snapshots", tok, steps, cfg.snapshots, compute, snaps) \
        if snapshots else None
    losses = fit(model, tok, pairs, steps=steps, batch_size=batch_size, lr=lr,
                 warmup_steps=cfg.warmup_steps if warmup_steps is None else warmup_steps,
                 min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                 seed=cfg.seed, desc=stage, progress=progress, compute=compute, on_step=hook)
    params = n_params(model)
    record = {"kind": "sft", "stage": stage, "task": cfg.task, "start": str(start) if start else "random",
              "config": asdict(cfg), "parameters": params, "examples": steps * batch_size, "steps": len(losses),
              "lr": lr, "batch_size": batch_size, "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
              "loss_curve": _curve(losses), "compute": compute.as_dict(params), "snapshots": snaps,
              "wall_s": round(watch.elapsed(), 1), "environment": environment()}
    save_checkpoint(model, tok, out, record)
    return record


def run_rl_stage(cfg: PipelineConfig, start: Path, out: Path, *, progress: bool) -> dict[str, Any]:
    """GRPO from `start` on the ID task (multi-turn, the verifier's feedback), with snapshots."""
    from .grpo import GRPOConfig, train_grpo

    gcfg = GRPOConfig(task=cfg.task, seed=cfg.seed, updates=cfg.rl_updates, hands_per_update=cfg.rl_hands,
                      group_size=cfg.rl_group, verify_iter=cfg.rl_verify_iter, lr=cfg.rl_lr,
                      epochs=cfg.rl_epochs, max_new_tokens=cfg.rl_max_new_tokens, threads=cfg.threads)
    snaps: list[dict] = []
    marks = sorted({0, *(round(cfg.rl_updates * (i + 1) / cfg.snapshots) for i in range(cfg.snapshots))})

    def hook(update: int, model, tok, compute: dict) -> None:
        if update in marks:
            path = out.parent / "rl-snapshots" / f"step-{update:05d}"
            model.save_pretrained(path, safe_serialization=True)
            tok.save_pretrained(path)
            snaps.append({"step": update, "path": str(path), **compute})

    record = train_grpo(gcfg, start, out, progress=progress, on_update=hook)
    record.update(stage="rl", pipeline_config=asdict(cfg), snapshots=snaps)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def train_pipeline(cfg: PipelineConfig, out: "str | Path", *, stages: Sequence[str] = STAGES,
                   progress: bool = True) -> dict[str, Any]:
    """Run the requested stages in order under `out/<stage>/`; a stage whose checkpoint already
    exists is kept (resumable). Returns {stage: training record}."""
    from .common import read_record

    out = Path(out)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    records: dict[str, Any] = {}
    task = training_task(cfg.task)
    for stage in STAGES:
        if stage not in stages:
            continue
        dest = out / stage
        if (dest / "training.json").is_file():
            records[stage] = read_record(dest)
            continue
        if stage == "base":
            pairs = task.stage_pairs("base", cfg.base_steps * cfg.base_batch, cfg.seed + 100, cfg)
            records[stage] = run_sft_stage(cfg, stage, None, pairs, dest, steps=cfg.base_steps,
                                           batch_size=cfg.base_batch, lr=cfg.base_lr, progress=progress,
                                           snapshots=True)
        elif stage == "init":
            pairs = task.stage_pairs("id", cfg.init_steps * cfg.sft_batch, cfg.seed + 200, cfg)
            records[stage] = run_sft_stage(cfg, stage, out / "base", pairs, dest, steps=cfg.init_steps,
                                           batch_size=cfg.sft_batch, lr=cfg.init_lr, progress=progress,
                                           warmup_steps=cfg.init_warmup_steps)
        elif stage == "sft":
            pairs = task.stage_pairs("id", cfg.sft_steps * cfg.sft_batch, cfg.seed + 300, cfg)
            records[stage] = run_sft_stage(cfg, stage, out / "init", pairs, dest, steps=cfg.sft_steps,
                                           batch_size=cfg.sft_batch, lr=cfg.sft_lr, progress=progress,
                                           snapshots=True)
        elif stage == "sft-diverse":
            pairs = task.stage_pairs("diverse", cfg.sft_steps * cfg.sft_batch, cfg.seed + 400, cfg)
            records[stage] = run_sft_stage(cfg, stage, out / "init", pairs, dest, steps=cfg.sft_steps,
                                           batch_size=cfg.sft_batch, lr=cfg.sft_lr, progress=progress,
                                           snapshots=True)
        elif stage == "rl":
            records[stage] = run_rl_stage(cfg, out / "init", dest, progress=progress)
    return records


# ---------------------------------------------------------------------------------------------
# Evaluation of the stages


EVAL_MAX_NEW_TOKENS = 96     # replies are ~30 (GP-L) / ~20 (V-IRL-L) tokens; a longer one is cut and graded


def split_result(res: dict[str, Any], headline: str) -> tuple[dict[str, Any], list]:
    """A table cell and the per-instance outcomes of one evaluated split: `value` is the task's
    headline (GP-L episode success, V-IRL-L per-step accuracy) with its binomial SE; outcomes are
    1/0 successes (GP-L) or [correct, calls] per episode (V-IRL-L), what paired comparisons need."""
    cell = {"value": res[headline], "se": res["headline_se"], "metric": headline, "n": len(res["successes"]),
            "success": res["success_rate"], "success_se": res["success_se"],
            "first_try_success": res.get("first_try_success")}
    if headline == "per_step_accuracy":
        cell.update(steps=res["steps"], correct_steps=res["correct_steps"])
        return cell, res["episode_steps"]
    return cell, res["successes"]


def paired(a: Sequence, b: Sequence) -> dict[str, float]:
    """Paired difference of two models' outcomes on the same instances (`split_result`): of 1/0
    successes, or of pooled per-step accuracy from [correct, calls] per episode."""
    if a and isinstance(a[0], (list, tuple)):
        return paired_ratio_difference(a, b)
    return paired_difference(a, b)


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
    contexts = [codec.prompt_ids(p) for p, _ in prompts]
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


CURVE_STAGES = ("sft", "rl", "sft-diverse")


def evaluate_stage(root: "str | Path", stage: str, cfg: PipelineConfig, *, curve: bool = True,
                   progress: bool = False) -> dict[str, Any]:
    """One stage's table row (every split's headline ± SE, KL(Init ‖ stage), compute), its
    per-instance outcomes (for paired comparisons) and, for `CURVE_STAGES`, its snapshot curve."""
    import torch
    from tqdm.auto import tqdm

    from .common import read_record
    from .evaluate import evaluate

    torch.set_num_threads(max(1, cfg.threads))
    root = Path(root)
    init_model, _ = load_checkpoint(root / "init")
    model, tok = load_checkpoint(root / stage)
    row: dict[str, Any] = {}
    outcomes: dict[str, list] = {}
    episodes: list[dict] = []
    for split in cfg.splits:
        res = evaluate(model, tok, cfg.task, split, cfg.eval_n, seed=cfg.seed, max_new_tokens=EVAL_MAX_NEW_TOKENS,
                       keep_episodes=True)
        row[split], outcomes[split] = split_result(res, cfg.headline)
        episodes += [{"stage": stage, "split": split, "index": i, **ep} for i, ep in enumerate(res["episodes"])]
    row["kl_from_init"] = kl_to_init(init_model, model, tok, cfg.kl_prompts, cfg.seed, cfg.task)
    rec = read_record(root / stage)
    row["compute"] = rec.get("compute")
    params = n_params(model)
    pts = []
    for s in (rec.get("snapshots") or []) if curve and stage in CURVE_STAGES else []:
        snap, stok = load_checkpoint(s["path"])
        train, infer = s.get("train_tokens") or 0, s.get("infer_tokens") or 0
        pt = {"step": s["step"], "train_tokens": train, "infer_tokens": infer,
              "flops": 2.0 * params * (3 * train + infer)}
        for split in cfg.splits:
            res = evaluate(snap, stok, cfg.task, split, cfg.curve_n, seed=cfg.seed, max_new_tokens=EVAL_MAX_NEW_TOKENS)
            pt[split] = res[cfg.headline]
        pt["kl_from_init"] = kl_to_init(init_model, snap, stok, min(cfg.kl_prompts, 64), cfg.seed, cfg.task)
        pts.append(pt)
        if progress:
            tqdm.write(f"curve {stage} step {s['step']}: " + ", ".join(f"{k} {pt[k]:.3f}" for k in cfg.splits))
    return {"stage": stage, "row": row, "outcomes": outcomes, "curve": pts, "episodes": episodes}


def _evaluate_stage_job(args) -> dict[str, Any]:
    root, stage, cfg = args
    return evaluate_stage(root, stage, cfg, progress=True)


COMPARISONS = (("rl_minus_sft", "rl", "sft"), ("rl_minus_init", "rl", "init"), ("sft_minus_init", "sft", "init"),
               ("sft_diverse_minus_sft", "sft-diverse", "sft"))


def evaluate_stages(root: "str | Path", cfg: PipelineConfig, *, stages: Sequence[str] = STAGES,
                    progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """The five-way table (every split's headline, KL to Init), the paired comparisons and the
    snapshot curves; written to `root/findings.json` and returned. `workers` > 1 evaluates stages
    in that many processes (one torch thread each)."""
    from tqdm.auto import tqdm

    root = Path(root)
    if workers > 1:
        import multiprocessing as mp

        job_cfg = replace(cfg, threads=1)
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_evaluate_stage_job, [(str(root), st, job_cfg) for st in stages], chunksize=1)
    else:
        results = [evaluate_stage(root, st, cfg, progress=progress)
                   for st in tqdm(stages, desc="evaluate stages", disable=not progress)]
    table = {r["stage"]: r["row"] for r in results}
    outcomes = {r["stage"]: r["outcomes"] for r in results}
    curves = {r["stage"]: r["curve"] for r in results if r["curve"]}
    comparisons = {name: {s: paired(outcomes[a][s], outcomes[b][s]) for s in cfg.splits}
                   for name, a, b in COMPARISONS if a in outcomes and b in outcomes}
    spec = get_task(cfg.task)
    findings = {"task": cfg.task, "metric": cfg.headline,
                "protocol": {"episodes_per_split": cfg.eval_n, "curve_episodes": cfg.curve_n,
                             "decoding": "checkpoint default (T=0.6, top-p 0.9)",
                             "splits": {s: spec.split(s).description for s in cfg.splits},
                             "instances": "protocol.instances (the registry's seeded evaluation streams)"},
                "table": table, "paired": comparisons, "curves": curves, "config": asdict(cfg),
                "environment": environment()}
    (root / "findings.json").write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")
    write_episodes(root / EPISODES_FILE, [ep for r in results for ep in r["episodes"]])
    write_stage_cards(root, findings)
    return findings


EPISODES_FILE = "episodes.jsonl.gz"


def write_episodes(path: Path, episodes: Sequence[dict]) -> None:
    """The evaluated episodes of the five-way table, one JSON object per line (stage, split,
    index in the split's instance list, task, params, instance_key, success, steps), gzipped
    deterministically (no timestamp) so a re-run with the same results is byte-identical."""
    import gzip

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for ep in episodes:
            gz.write((json.dumps(ep, separators=(",", ":")) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Model cards

METRIC_WORDS = {"success_rate": "episode success", "per_step_accuracy": "per-step accuracy"}


def cell_value(cell: dict[str, Any]) -> float:
    """A table cell's headline value (`value`; findings written before V-IRL-L carry `success`)."""
    return cell["value"] if "value" in cell else cell["success"]


def stage_card(stage: str, findings: dict[str, Any], record: dict[str, Any]) -> str:
    """The model card (README.md) of one pipeline stage: what it saw, what it never saw, how it
    was trained, and its row of the five-way table with the command that made it."""
    cfg = findings.get("config") or {}
    task = findings.get("task", "gp-l")
    entry = training_task(task)
    facts = dict(cfg, base_examples=cfg.get("base_steps", 0) * cfg.get("base_batch", 0),
                 init_examples=cfg.get("init_steps", 0) * cfg.get("sft_batch", 0),
                 sft_examples=cfg.get("sft_steps", 0) * cfg.get("sft_batch", 0))
    role, saw, never = entry.stage_text[stage]
    row = findings["table"].get(stage, {})
    compute = record.get("compute") or {}
    metric = METRIC_WORDS.get(findings.get("metric", "success_rate"), "episode success")
    params = record.get("parameters") or 0
    lines = [
        f"# {task}-{stage}: {role}", "",
        f"A ~{params / 1e6:.1f} M-parameter Llama (`models.tiny.build_tiny_llama`) trained on a CPU by the staged "
        f"pipeline (`sftvsrl train pipeline --task {task}`, `models/train/pipeline.py`). It reads the paper's exact "
        f"{entry.label} prompt and answers in the paper's format.", "",
        f"**Saw:** {saw.format(**facts)}", "",
        f"**Never saw:** {never}", "",
        f"**Training:** {record.get('wall_s', '?')} s wall; {compute.get('train_tokens', 0):,} trained token "
        f"positions, {compute.get('infer_tokens', 0):,} forward-only; ~{compute.get('flops', 0):.2e} FLOPs "
        "(`training.json` has the full record: config, curves, environment).", "",
        f"| split | {metric} (± binomial SE) |", "|---|---|",
        *[f"| {s} | {100 * cell_value(row[s]):.1f} ± {100 * row[s]['se']:.1f} % (n = {row[s]['n']} episodes"
          + (f", {row[s]['steps']} steps" if "steps" in row[s] else "") + ") |"
          for s in splits(task) if s in row],
        "", f"KL(Init ‖ this model) on ID prompts: {row.get('kl_from_init', 0):.3f} nats per reply.", "",
        f"Evaluation: the protocol's batched executor, {findings['protocol']['episodes_per_split']} episodes per "
        f"split, {findings['protocol']['decoding']}, made by `sftvsrl train pipeline --task {task}` "
        "(`findings.json`).",
    ]
    return "\n".join(lines) + "\n"


def write_stage_cards(root: "str | Path", findings: dict[str, Any]) -> None:
    """README.md (the model card) in every evaluated stage's checkpoint directory."""
    from .common import read_record

    root = Path(root)
    for stage in findings["table"]:
        (root / stage / "README.md").write_text(stage_card(stage, findings, read_record(root / stage)),
                                                encoding="utf-8")
