"""On-policy RL from the SFT checkpoint with the verifier's reward: GRPO over multi-turn episodes.

One update (CleanRL-style, all hyper-parameters in `GRPOConfig`, per-task changes in `models.train.tasks`):
1. **Rollouts.** Draw `hands_per_update` in-distribution instances (the task's training stream in
   `models.train.tasks`) and play `group_size` episodes on each as registry sessions, with the
   evaluation's batched executor (`models.train.evaluate.run_episodes`), exactly as at evaluation:
   - GP-L: hands (J/Q/K = 10) from a seeded `Dealer`; the paper's prompt, up to 5 tries with
     sequential revision (the raw reply and `You failed this trial because …` are appended),
     graded by `game.gp.verifier`;
   - V-IRL-L: training episodes (route + episode seed, hence the same heading and rail for the
     whole group) on `bundled:helsinki` with absolute actions; multi-step and multi-turn as the
     reference (a fresh chat at every position, 2 graded tries per position, feedback appended
     after a wrong one), graded by `game.virl.verifier`.
   Sampling at `temperature` 1 and top-p 1, so the sampled tokens come from the very policy
   being trained.
2. **Advantages.** An episode's return is the sum of the paper's step rewards (GP-L: +5 solved, −1
   wrong value, −2/−3 illegal …, −1 for the wasted 6th call, so solving on an earlier try earns
   more; V-IRL-L: +1 per correct action, −1 / −1.5 per wrong one, −1 for the wasted third call,
   so walking further earns more). Advantage = (return − group mean) / (group std + ε) over the
   episodes of the same instance; every call of an episode gets its episode's advantage.
3. **Update.** `epochs` passes of the clipped surrogate (PPO ratio against the rollout policy) over
   the reply tokens incl. `<|eot_id|>`, averaged per try, then per episode, then over episodes
   (every episode weighs the same, however many tries it took); Adam, gradient clipping. No KL
   penalty and no reference model, as in the paper's PPO.

Why GRPO rather than the paper's PPO: a value head would have to be trained from scratch next to a
1 M-parameter policy on a CPU budget of minutes; the group of episodes on one hand gives the
baseline for free, with no critic to fit and half the forward passes.

    sftvsrl train rl --task gp-l --init models/checkpoints/gp-l-sft --out models/checkpoints/gp-l-rl
    sftvsrl train rl --task virl-l --init models/checkpoints/virl-l-sft --out models/checkpoints/virl-l-rl
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from game import protocol
from game.tasks import open_session

from .common import (Stopwatch, environment, load_checkpoint, n_params, read_record, save_checkpoint, setup_torch,
                     task_config)
from .data import ChatCodec
from .evaluate import EpisodeBatch, Turn, run_episodes
from .tasks import training_task


@dataclass(frozen=True)
class GRPOConfig:
    task: str = "gp-l"
    seed: int = 0
    updates: int = 20
    hands_per_update: int = 8        # instances per update: GP-L hands, V-IRL-L (route, seed) episodes
    group_size: int = 6              # episodes per instance (the GRPO group)
    verify_iter: int = 5             # the paper's try budget (GP-L 5 tries per hand, V-IRL-L 2 per position)
    temperature: float = 1.0         # rollout sampling (1.0: the trained policy itself)
    top_p: float = 1.0
    max_new_tokens: int = 64         # replies are ~30 tokens; a longer one is cut and graded as is
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.98)
    epochs: int = 2
    minibatch_turns: int = 32
    clip: float = 0.2
    max_grad_norm: float = 1.0
    adv_eps: float = 1e-4
    threads: int = 2

    @classmethod
    def quick(cls, seed: int = 0) -> "GRPOConfig":
        return cls(seed=seed, updates=2, hands_per_update=2, group_size=2, max_new_tokens=40, epochs=1)


class Rollouts:
    """The task side of a GRPO update: the task's seeded in-distribution training instances
    (`models.train.tasks`), played as registry sessions by the evaluation's batched executor."""

    def __init__(self, cfg: "GRPOConfig", codec: ChatCodec) -> None:
        self.cfg, self.codec = cfg, codec
        self.instances = training_task(cfg.task, "tiny RL", vision=True).rollouts(cfg)   # take(n) -> [Instance]

    def play(self, model, instances: list) -> EpisodeBatch:
        """One episode per instance (a group = the same instance repeated), sampled on-policy."""
        cfg = self.cfg
        return run_episodes(model, self.codec, [open_session(x) for x in instances], batch_size=len(instances),
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)

    def returns(self, batch: EpisodeBatch) -> list[float]:
        return batch.returns()

    def stats(self, batch: EpisodeBatch) -> dict[str, float]:
        """The rollouts' episode success, first-try success and per-step accuracy (the protocol's)."""
        m = protocol.split_metrics(self.cfg.task, batch.scores())
        return {"success": m["success_rate"], "first_try_success": m["first_try_success"],
                "per_step_accuracy": m["per_step_accuracy"]}


def group_advantages(returns: list[float], group_size: int, eps: float) -> list[float]:
    """GRPO advantages: returns standardised within consecutive groups of `group_size`."""
    out = []
    for g in range(0, len(returns), group_size):
        grp = returns[g:g + group_size]
        mean = sum(grp) / len(grp)
        std = math.sqrt(sum((r - mean) ** 2 for r in grp) / len(grp))
        out += [(r - mean) / (std + eps) for r in grp]
    return out


def reply_logprobs(model, turns: list[Turn], pad_id: int):
    """Per-token log-probs of each turn's reply given its context: (logp [B, T], mask [B, T])."""
    import torch

    seqs = [t.context + t.reply for t in turns]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s)
        attn[row, :len(s)] = 1
    extra = {}
    if turns and turns[0].pixels is not None:   # a vision checkpoint: the image each turn was generated with
        from .data import vision_inputs

        extra = vision_inputs([t.pixels for t in turns], [t.context.index(model.config.image_token_index)
                                                          for t in turns], width)
    logits = model(input_ids=ids, attention_mask=attn, **extra).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    reply_mask = torch.zeros_like(logp_all)
    for row, t in enumerate(turns):
        start = len(t.context) - 1  # logits at position i predict token i + 1
        reply_mask[row, start:start + len(t.reply)] = 1.0
    return logp_all, reply_mask


def policy_update(model, opt, turns: list[Turn], adv: list[float], old: list, cfg: GRPOConfig, pad_id: int):
    """`cfg.epochs` passes of the clipped surrogate over `turns` in minibatches of
    `cfg.minibatch_turns` (in list order, matching the `old` log-prob chunks).

    The objective, maximised: for each reply token, min(ratio·A, clip(ratio, 1±ε)·A) with
    ratio = π(token) / π_old(token) and A the episode's advantage; averaged over the reply's
    tokens, then over an episode's tries, then over episodes, so every episode weighs the same
    however many tries it took (a token-level mean lets a failed episode's five long tries push the
    shared format tokens down). Returns (losses, clip fractions, token positions trained on)."""
    import torch

    tries: dict[int, int] = {}
    for t in turns:
        tries[t.episode] = tries.get(t.episode, 0) + 1
    losses, clipped, trained = [], [], 0
    for _ in range(cfg.epochs):
        for mb, start in enumerate(range(0, len(turns), cfg.minibatch_turns)):
            chunk = turns[start:start + cfg.minibatch_turns]
            a = torch.tensor([adv[t.episode] for t in chunk]).unsqueeze(1)        # [B, 1]
            if not a.abs().sum():
                continue  # every episode of these groups scored the same: no signal
            logp, mask = reply_logprobs(model, chunk, pad_id)                    # [B, T], [B, T]
            trained += sum(len(t.context) + len(t.reply) for t in chunk)
            ratio = torch.exp(logp - old[mb])
            surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * a)
            per_try = 1.0 / torch.tensor([float(tries[t.episode]) for t in chunk])  # [B]
            per_token = (surrogate * mask).sum(1) / mask.sum(1).clamp(min=1)        # [B]
            loss = -(per_try * per_token).sum() / per_try.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            losses.append(float(loss.detach()))
            clipped.append(float((((ratio - 1).abs() > cfg.clip).float() * mask).sum() / mask.sum()))
    return losses, clipped, trained


def train_grpo(cfg: GRPOConfig, init: "str | Path", out: "str | Path", *, progress: bool = True,
               on_update=None) -> dict[str, Any]:
    """Run GRPO from the checkpoint at `init`; saves to `out` and returns the training record.

    `on_update(update, model, tokenizer, compute)` runs once before the first update (update 0)
    and after every update (1-based); `compute` holds the token passes so far (snapshots)."""
    import torch
    from tqdm.auto import tqdm

    setup_torch(cfg.seed, cfg.threads)
    watch = Stopwatch()
    model, tok = load_checkpoint(init)
    ref_model, _ = load_checkpoint(init)      # the initial policy, frozen: for the KL we log
    ref_model.eval()
    codec = ChatCodec(tok)
    compute = {"train_tokens": 0, "infer_tokens": 0}
    if on_update:
        on_update(0, model, tok, dict(compute))
    rollouts = Rollouts(cfg, codec)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    history: list[dict[str, float]] = []
    bar = tqdm(range(cfg.updates), desc="rl", disable=not progress, dynamic_ncols=True)
    for update in bar:
        # 1. rollouts with the current policy
        model.eval()
        instances = rollouts.instances(cfg.hands_per_update)
        batch = rollouts.play(model, [x for x in instances for _ in range(cfg.group_size)])
        returns = rollouts.returns(batch)
        adv = group_advantages(returns, cfg.group_size, cfg.adv_eps)
        turns = batch.turns
        turn_tokens = [len(t.context) + len(t.reply) for t in turns]
        compute["infer_tokens"] += 3 * sum(turn_tokens)   # generation, old log-probs, reference log-probs
        with torch.no_grad():
            old, kl_terms, ent_terms = [], [], []
            for i in range(0, len(turns), cfg.minibatch_turns):
                lp, m = reply_logprobs(model, turns[i:i + cfg.minibatch_turns], codec.pad_id)
                lp_ref, _ = reply_logprobs(ref_model, turns[i:i + cfg.minibatch_turns], codec.pad_id)
                old.append(lp)
                kl_terms.append(float(((lp - lp_ref) * m).sum()))   # k1 estimate of KL(policy ‖ init)
                ent_terms.append(float((-lp * m).sum()))             # sampled-token entropy estimate
        groups = [returns[g:g + cfg.group_size] for g in range(0, len(returns), cfg.group_size)]
        zero_var = sum(1 for g in groups if max(g) == min(g)) / len(groups)
        n_reply_tokens = sum(len(t.reply) for t in turns)
        # 2. clipped policy-gradient epochs over the turns
        model.train()
        losses, clipped, trained = policy_update(model, opt, turns, adv, old, cfg, codec.pad_id)
        compute["train_tokens"] += trained
        stats = {
            "update": update, "mean_return": sum(returns) / len(returns), **rollouts.stats(batch),
            "turns": len(turns), "loss": sum(losses) / len(losses) if losses else 0.0,
            "clip_frac": sum(clipped) / len(clipped) if clipped else 0.0,
            "kl_to_init_per_token": sum(kl_terms) / max(1, n_reply_tokens),
            "entropy_per_token": sum(ent_terms) / max(1, n_reply_tokens),
            "zero_variance_groups": zero_var, **compute,
        }
        history.append(stats)
        if on_update:
            on_update(update + 1, model, tok, dict(compute))
        bar.set_postfix(ret=f"{stats['mean_return']:+.2f}", succ=f"{stats['success']:.2f}",
                        first=f"{stats['first_try_success']:.2f}", acc=f"{stats['per_step_accuracy']:.2f}",
                        loss=f"{stats['loss']:+.3f}")
    bar.close()
    model.eval()
    wall = watch.elapsed()
    record = {
        "kind": "rl", "algorithm": "grpo", "task": cfg.task, "config": asdict(cfg), "init": str(init),
        "init_record": {k: read_record(init).get(k) for k in ("kind", "steps", "wall_s", "config")},
        "parameters": n_params(model), "updates": len(history),
        "episodes": len(history) * cfg.hands_per_update * cfg.group_size,
        "turns": sum(h["turns"] for h in history), "history": history,
        "compute": {**compute, "flops": 2.0 * n_params(model) * (3 * compute["train_tokens"] + compute["infer_tokens"])},
        "wall_s": round(wall, 1), "updates_per_s": round(len(history) / wall, 4) if wall else None,
        "environment": environment(),
    }
    save_checkpoint(model, tok, out, record)
    return record


def quick_config(quick: bool, seed: int, task: str = "gp-l", **overrides) -> GRPOConfig:
    """The full (or `--quick`) config of `task`, then any non-None `overrides`."""
    return task_config(GRPOConfig, training_task(task, "tiny RL").grpo, quick, seed, task, overrides)
