"""On-policy RL from Init with the verifier's reward: GRPO over multi-turn episodes, per-call credit.

The one GRPO: the staged pipeline's RL stage (text and vision) and `sftvsrl train rl` (the same
GRPO config, `models.train.config.rl_config`, from any checkpoint). One update (CleanRL-style:
every hyper-parameter is a `GRPOConfig` field, documented where it is declared in
`models.train.config`; per-task values in the training entries' `pipeline` presets,
`models.train.tasks`):

1. **Rollouts.** Draw `hands_per_update` in-distribution training instances (the registry's
   training stream: never a held-out evaluation hand) and play `group_size` episodes of each as
   registry sessions with the evaluation's batched executor (`models.train.evaluate.run_episodes`),
   exactly as at evaluation: GP up to 5 tries with sequential revision (the reply and `You failed
   this trial because …` appended), V-IRL 2 tries per position. Sampled at `temperature`/`top_p`.
2. **Per-call credit.** Every generated call gets its own reward-to-go G_c = Σ_{k≥c} γ^{k−c} r_k
   (its own reward and what followed it in the episode, the ignored closing call included), not the
   whole episode's return: a good revision and the bad first try before it no longer share one
   advantage. The baseline of call c is the mean G_c over the episodes of the same instance that
   reached call c (for c = 1 the very same state; after feedback the same instance and try), and
   the advantage is (G_c − mean) / (std + ε). A call group whose episodes all succeeded or all
   failed (`uniform="success"`, GP) or all scored the same (`"return"`, V-IRL) carries no signal and
   contributes nothing — no std-normalised noise about garbage retries.
3. **Update.** `epochs` passes of the clipped surrogate (PPO ratio against the rollout policy) over
   the reply tokens of the calls with a non-zero advantage (incl. `<|eot_id|>`), each call's token
   mean weighted equally, plus `kl_coef` × the per-token KL to the frozen Init (the k3 estimator
   exp(q − p) − (q − p) − 1 of KL(π ‖ π_Init) on the sampled tokens): the policy may move where
   reward asks and is pulled back everywhere else. Adam, gradient clipping.
4. **Early stop.** Every `val_every` updates, the policy plays `val_hands` held-aside training
   hands at its evaluation decoding; when the success has not risen by `val_min_delta` for
   `patience` checks the run stops at the ID plateau and the best checkpoint is kept. The
   validation hands are other draws of the training stream, so by default RL also practises their
   problems (GP-L's stream has only ~700 card multisets): measured on the shipped GP-L Init, RL
   gained +4.7 ± 1.2 points on practised multisets and −0.8 ± 1.3 on unseen ones, so such a check
   rewards recall. `val_unseen` keeps every validation problem (`Task.recall_key`) out of the
   rollouts, and the early stop then measures generalisation.

A reply that never ends (no end-of-turn within `max_new_tokens`) is graded as played, but its
call's reward for learning is `unfinished_reward` (an illegal formula's −3 by default): a policy
must not learn to run on after its answer.

Why GRPO rather than the paper's PPO: a value head would have to be trained from scratch beside a
~1 M-parameter policy on a CPU budget of minutes; groups of episodes on one instance give the
baseline with no critic to fit and half the forward passes.

    sftvsrl train rl --task gp-l --init models/checkpoints/gp-l-sft --out runs/gp-l-rl-from-sft
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence, cast

from game import protocol
from game.tasks import open_session

from .common import Stopwatch, environment, load_checkpoint, n_params, read_record, save_checkpoint, setup_torch
from .config import GRPOConfig
from .data import ChatCodec
from .evaluate import EpisodeBatch, Turn, run_episodes
from .tasks import training_task

__all__ = ["GRPOConfig", "train_grpo"]


# The validation hands come from the training stream under another seed (the same distribution,
# other draws than the updates').
VAL_SEED_OFFSET = 7919


class Rollouts:
    """The task side of a GRPO update: the task's seeded in-distribution training instances
    (`models.train.tasks`), played as registry sessions by the evaluation's batched executor."""

    def __init__(self, cfg: "GRPOConfig", codec: ChatCodec) -> None:
        self.cfg, self.codec = cfg, codec
        self.entry = training_task(cfg.task, "tiny RL", vision=True)
        self.instances = self.entry.rollouts(cfg)   # take(n) -> [Instance]
        if cfg.val_unseen and cfg.val_hands:
            self.instances = self._unseen(self.instances)

    def _unseen(self, take: Callable[[int], list]) -> Callable[[int], list]:
        """`take` without the problems of the validation hands (`GRPOConfig.val_unseen`)."""
        spec, held = self.entry.spec, {self.entry.spec.recall_key(x) for x in self.validation()}

        def take_unseen(n: int) -> list:
            out: list = []
            for _ in range(100):
                out += [x for x in take(n - len(out)) if spec.recall_key(x) not in held]
                if len(out) >= n:
                    return out
            raise ValueError(f"{self.cfg.task}: the {self.cfg.val_hands} validation hands hold nearly every training "
                             "problem (val_unseen): use fewer val_hands")
        return take_unseen

    def play(self, model, instances: list, *, temperature: float | None = None,
             top_p: float | None = None) -> EpisodeBatch:
        """One episode per instance (a group = the same instance repeated), sampled on-policy
        (`temperature` None: the config's rollout sampling)."""
        cfg = self.cfg
        return run_episodes(model, self.codec, [open_session(x) for x in instances], batch_size=len(instances),
                            max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature if temperature is None else temperature,
                            top_p=cfg.top_p if top_p is None else top_p)

    def validation(self) -> list:
        """The held-aside validation hands: the training stream under another seed."""
        if not self.cfg.val_hands:
            return []
        return self.entry.spec.training_instances(self.cfg.val_hands,
                                                  self.cfg.seed + self.entry.rl_seed_offset + VAL_SEED_OFFSET,
                                                  verify_iter=self.cfg.verify_iter)

    def stats(self, batch: EpisodeBatch) -> dict[str, float]:
        """The rollouts' episode success, first-try success and per-step accuracy (the protocol's)."""
        m = protocol.split_metrics(self.cfg.task, batch.scores())
        return {"success": m["success_rate"], "first_try_success": m["first_try_success"],
                "per_step_accuracy": m["per_step_accuracy"]}


# ---------------------------------------------------------------------------------------------
# Credit assignment


def rewards_to_go(rewards: Sequence[float], gamma: float) -> list[float]:
    """G_c = Σ_{k ≥ c} γ^(k − c) r_k for every position c."""
    out, acc = [0.0] * len(rewards), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out


def call_returns(batch: EpisodeBatch, cfg: GRPOConfig) -> list[list[float]]:
    """Per episode, the learning return of each generated call (in the order of `batch.turns`):
    its reward-to-go (`credit="call"`) or the episode's return (`"episode"`). A reply that never
    ended gets `unfinished_reward` as its own reward."""
    unfinished = _unfinished(batch, cfg)
    out: list[list[float]] = []
    for i, s in enumerate(batch.sessions):
        rewards = [float(r.reward) for r in s.results]
        graded = [k for k, r in enumerate(s.results) if r.graded]
        if cfg.unfinished_reward is not None:  # (otherwise `unfinished` is empty)
            for k in unfinished.get(i, ()):
                rewards[graded[k]] = float(cfg.unfinished_reward)
        if cfg.credit == "episode":
            out.append([sum(rewards)] * len(graded))
        else:
            togo = rewards_to_go(rewards, cfg.gamma)
            out.append([togo[k] for k in graded])
    return out


def _unfinished(batch: EpisodeBatch, cfg: GRPOConfig) -> dict[int, list[int]]:
    """{episode: [indices of its generated calls whose reply has no stop token]}."""
    if cfg.unfinished_reward is None:
        return {}
    seen: dict[int, int] = {}
    out: dict[int, list[int]] = {}
    for t in batch.turns:
        k = seen.get(t.episode, 0)
        seen[t.episode] = k + 1
        if not t.finished:
            out.setdefault(t.episode, []).append(k)
    return out


def call_advantages(returns: Sequence[Sequence[float]], success: Sequence[bool], group_size: int, *,
                    eps: float = 1e-4, uniform: str = "success") -> list[list[float]]:
    """Advantages per episode and call: within each group of `group_size` consecutive episodes (the
    same instance), call c is compared with call c of the group's other episodes that reached it.
    A call group of fewer than two, or one with no signal (`uniform`: all successes equal, all
    returns equal, or never), gets 0."""
    out = [[0.0] * len(r) for r in returns]
    for g in range(0, len(returns), group_size):
        members = range(g, min(g + group_size, len(returns)))
        depth = max((len(returns[i]) for i in members), default=0)
        for c in range(depth):
            at = [i for i in members if len(returns[i]) > c]
            if len(at) < 2:
                continue
            values = [returns[i][c] for i in at]
            if uniform == "success" and len({bool(success[i]) for i in at}) == 1:
                continue
            if uniform in ("success", "return") and max(values) == min(values):
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            for i, v in zip(at, values):
                out[i][c] = (v - mean) / (std + eps)
    return out


def group_advantages(returns: list[float], group_size: int, eps: float) -> list[float]:
    """Plain GRPO advantages of single-call episodes: returns standardised within consecutive
    groups of `group_size` (a group with equal returns gets 0)."""
    adv = call_advantages([[r] for r in returns], [False] * len(returns), group_size, eps=eps, uniform="return")
    return [a[0] for a in adv]


def turn_advantages(batch: EpisodeBatch, per_episode: Sequence[Sequence[float]]) -> list[float]:
    """The per-call advantages laid out in the order of `batch.turns`."""
    seen: dict[int, int] = {}
    out = []
    for t in batch.turns:
        k = seen.get(t.episode, 0)
        seen[t.episode] = k + 1
        out.append(per_episode[t.episode][k])
    return out


# ---------------------------------------------------------------------------------------------
# The loss


def reply_logprobs(model, turns: list[Turn], pad_id: int, temperature: float = 1.0):
    """Per-token log-probs of each turn's reply given its context: (logp [B, T], mask [B, T]), under
    the distribution the rollouts sampled from (logits / `temperature`), so the PPO ratio and the
    KL compare the policy that acted."""
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

        images = cast("list[dict]", [t.pixels for t in turns])  # a vision batch: every turn has its image
        extra = vision_inputs(images, [t.context.index(model.config.image_token_index) for t in turns], width)
    logits = model(input_ids=ids, attention_mask=attn, **extra).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    reply_mask = torch.zeros_like(logp_all)
    for row, t in enumerate(turns):
        start = len(t.context) - 1  # logits at position i predict token i + 1
        reply_mask[row, start:start + len(t.reply)] = 1.0
    return logp_all, reply_mask


def policy_update(model, opt, turns: list[Turn], adv: Sequence[float], old: list, cfg: GRPOConfig, pad_id: int,
                  ref: list | None = None):
    """`cfg.epochs` passes of the clipped surrogate over `turns` (one advantage per turn, in list
    order) in minibatches of `cfg.minibatch_turns`, matching the `old` (rollout policy) and `ref`
    (Init) log-prob chunks.

    Maximised, per reply token: min(ratio·A, clip(ratio, 1±ε)·A) − kl_coef · k3(π, π_ref), with
    ratio = π(token) / π_old(token); averaged over the reply's tokens, then over the calls, so
    every call weighs the same however long its reply. Returns (losses, clip fractions, KL
    terms, token positions trained on)."""
    import torch

    losses, clipped, kls, trained = [], [], [], 0
    for _ in range(cfg.epochs):
        for mb, start in enumerate(range(0, len(turns), cfg.minibatch_turns)):
            chunk = turns[start:start + cfg.minibatch_turns]
            a = torch.tensor(list(adv[start:start + len(chunk)]), dtype=torch.float32).unsqueeze(1)   # [B, 1]
            logp, mask = reply_logprobs(model, chunk, pad_id, cfg.temperature)                   # [B, T], [B, T]
            trained += sum(len(t.context) + len(t.reply) for t in chunk)
            ratio = torch.exp(logp - old[mb])
            surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * a)
            per_token = surrogate
            if ref is not None and cfg.kl_coef:
                delta = ref[mb] - logp                                                            # log π_ref − log π
                k3 = torch.exp(delta) - delta - 1
                per_token = per_token - cfg.kl_coef * k3
                kls.append(float(((k3 * mask).sum() / mask.sum().clamp(min=1)).detach()))
            per_call = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)                       # [B]
            loss = -per_call.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            losses.append(float(loss.detach()))
            clipped.append(float((((ratio - 1).abs() > cfg.clip).float() * mask).sum() / mask.sum()))
    return losses, clipped, kls, trained


def validate(rollouts: Rollouts, model, hands: list) -> dict[str, float]:
    """Success of the policy at its evaluation decoding (the checkpoint's) on the validation hands."""
    if not hands:
        return {}
    batch = run_episodes(model, rollouts.codec, [open_session(x) for x in hands], batch_size=len(hands),
                         max_new_tokens=rollouts.cfg.max_new_tokens)   # temperature None: the checkpoint's decoding
    return rollouts.stats(batch)


def train_grpo(cfg: GRPOConfig, init: "str | Path", out: "str | Path", *, progress: bool = True,
               on_update: Callable | None = None) -> dict[str, Any]:
    """Run GRPO from the checkpoint at `init`; saves to `out` and returns the training record.

    `on_update(update, model, tokenizer, compute)` runs once before the first update (update 0)
    and after every update (1-based); `compute` holds the token passes so far (snapshots)."""
    import torch
    from tqdm.auto import tqdm

    setup_torch(cfg.seed, cfg.threads)
    watch = Stopwatch()
    model, tok = load_checkpoint(init)
    ref_model, _ = load_checkpoint(init)      # Init, frozen: the KL penalty's reference
    ref_model.eval()
    codec = ChatCodec(tok)
    compute = {"train_tokens": 0, "infer_tokens": 0}
    if on_update:
        on_update(0, model, tok, dict(compute))
    rollouts = Rollouts(cfg, codec)
    val_hands = rollouts.validation()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    history: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    if val_hands:
        model.eval()
        validation.append({"update": 0, **validate(rollouts, model, val_hands)})
        best = {"update": 0, "success": validation[-1]["success"], "state": copy.deepcopy(model.state_dict())}
    mark = best.get("success", 0.0)     # progress = beating this by val_min_delta
    stale, stopped = 0, None
    bar = tqdm(range(cfg.updates), desc="rl", disable=not progress, dynamic_ncols=True)
    for update in bar:
        # 1. rollouts with the current policy
        model.eval()
        instances = rollouts.instances(cfg.hands_per_update)
        batch = rollouts.play(model, [x for x in instances for _ in range(cfg.group_size)])
        success = [bool(s.success) for s in batch.sessions]
        per_call = call_advantages(call_returns(batch, cfg), success, cfg.group_size, eps=cfg.adv_eps,
                                   uniform=cfg.uniform)
        adv_all = turn_advantages(batch, per_call)
        keep = [k for k, a in enumerate(adv_all) if a != 0.0]
        turns = [batch.turns[k] for k in keep]
        adv = [adv_all[k] for k in keep]
        compute["infer_tokens"] += sum(len(t.context) + len(t.reply) for t in batch.turns)   # generation
        # 2. old (rollout) and reference (Init) log-probs of the calls that carry signal
        with torch.no_grad():
            old, ref, kl_terms, ent_terms, n_tok = [], [], 0.0, 0.0, 0
            for i in range(0, len(turns), cfg.minibatch_turns):
                chunk = turns[i:i + cfg.minibatch_turns]
                lp, m = reply_logprobs(model, chunk, codec.pad_id, cfg.temperature)
                lp_ref, _ = reply_logprobs(ref_model, chunk, codec.pad_id, cfg.temperature)
                old.append(lp)
                ref.append(lp_ref)
                kl_terms += float(((lp - lp_ref) * m).sum())   # k1 estimate of KL(policy ‖ init) on sampled tokens
                ent_terms += float((-lp * m).sum())
                n_tok += int(m.sum())
        compute["infer_tokens"] += 2 * sum(len(t.context) + len(t.reply) for t in turns)
        # 3. clipped policy-gradient epochs with the KL penalty
        model.train()
        losses, clipped, kls, trained = policy_update(model, opt, turns, adv, old, cfg, codec.pad_id, ref) \
            if turns else ([], [], [], 0)
        compute["train_tokens"] += trained
        groups = len(instances)
        signal = sum(1 for g in range(groups) if any(
            a for ep in per_call[g * cfg.group_size:(g + 1) * cfg.group_size] for a in ep))
        calls_by_try: dict[int, int] = {}
        for ep in per_call:
            for c, a in enumerate(ep):
                if a:
                    calls_by_try[c + 1] = calls_by_try.get(c + 1, 0) + 1
        stats = {
            "update": update + 1, **rollouts.stats(batch), "calls": len(batch.turns), "trained_calls": len(turns),
            "trained_calls_by_try": calls_by_try, "groups_with_signal": signal / groups,
            "unfinished_replies": sum(not t.finished for t in batch.turns) / max(1, len(batch.turns)),
            "mean_return": sum(sum(r.reward for r in s.results) for s in batch.sessions) / len(batch.sessions),
            "loss": sum(losses) / len(losses) if losses else 0.0,
            "clip_frac": sum(clipped) / len(clipped) if clipped else 0.0,
            "kl_penalty_per_token": sum(kls) / len(kls) if kls else 0.0,
            "kl_to_init_per_token": kl_terms / max(1, n_tok), "entropy_per_token": ent_terms / max(1, n_tok),
            **compute,
        }
        model.eval()
        if val_hands and (update + 1) % cfg.val_every == 0:
            v = validate(rollouts, model, val_hands)
            validation.append({"update": update + 1, **v})
            stats["validation_success"] = v["success"]
            if v["success"] > best["success"]:      # the best policy so far is kept
                best = {"update": update + 1, "success": v["success"], "state": copy.deepcopy(model.state_dict())}
            if v["success"] >= mark + cfg.val_min_delta:
                mark, stale = v["success"], 0
            else:
                stale += 1
        history.append(stats)
        if on_update:
            on_update(update + 1, model, tok, dict(compute))
        bar.set_postfix(succ=f"{stats['success']:.2f}", first=f"{stats['first_try_success']:.2f}",
                        sig=f"{stats['groups_with_signal']:.2f}", kl=f"{stats['kl_to_init_per_token']:.3f}",
                        val=f"{validation[-1]['success']:.2f}" if validation else "-")
        if val_hands and stale >= cfg.patience:
            stopped = update + 1
            break
    bar.close()
    if best.get("state") is not None:
        model.load_state_dict(best["state"])
    model.eval()
    wall = watch.elapsed()
    record = {
        "kind": "rl", "algorithm": "grpo", "task": cfg.task, "config": asdict(cfg), "init": str(init),
        "init_record": {k: read_record(init).get(k) for k in ("kind", "steps", "wall_s", "config")},
        "parameters": n_params(model), "updates": len(history),
        "episodes": len(history) * cfg.hands_per_update * cfg.group_size,
        "calls": sum(h["calls"] for h in history), "history": history, "validation": validation,
        "early_stop": {"stopped_at": stopped, "kept_update": best.get("update", len(history)),
                       "kept_validation_success": best.get("success")},
        "compute": {**compute, "flops": 2.0 * n_params(model) * (3 * compute["train_tokens"] + compute["infer_tokens"])},
        "wall_s": round(wall, 1), "updates_per_s": round(len(history) / wall, 4) if wall else None,
        "environment": environment(),
    }
    save_checkpoint(model, tok, out, record)
    return record

