"""Paper-protocol evaluation of a checkpoint on GP-L and V-IRL-L, batched and in-process.

GP-L:

Each hand is one `game.gp.episode.Episode` with the paper's 5-try budget and sequential revision:
the chat grows with the model's raw reply and `You failed this trial because <Verify Info>`
(`models.chat.gp_chat`), rendered with the checkpoint's chat template and tokenised as the `local`
backend does. Many episodes advance together: every round, all unfinished episodes are generated
in left-padded batches. An episode that used its 5 graded tries gets the paper's wasted 6th call
(`step_limit_reached`) without generating.

Splits: `id` = the paper's `language_id` hand list (J/Q/K = 10), `ood` = `language_rule_ood`
(J/Q/K = 11/12/13, at least one face card), both from `game.gp.deal.evaluation_hands` (seed 42),
extended past the paper's 234 episodes when `n` is larger. Metric: episode success (some try
scored +5) with the binomial standard error sqrt(p(1-p)/n), as the paper's error bars.

V-IRL-L: each episode is one `game.virl.episode.VirlEpisode` with the shipped settings (verify_iter
2, drop rate 0.5, relocation on) and the reference's sequential revision (`models.chat.next_chat`: a
fresh chat with the current prompt after every `Correct action.`, else the raw reply and `You failed
this trial because …` appended); the budget-exhausted third call on a position is the paper's wasted
call (−1, `Exceed maximum verify steps`), made without generating. Splits (`VIRL_SPLITS`):
`id` = `bundled:helsinki` with absolute actions, `ood` = the same episodes (same routes, headings and
rails) with relative actions (the rule-OOD variant), `streets` = `bundled:helsinki-ood` (held-out
streets) with absolute actions. Episode i walks route i mod R with episode seed i (seeds < 10,000;
training seeds start at 1,000,000). Metrics: per-step accuracy (calls scored +1 over all calls,
pooled over the episodes, the paper's V-IRL metric) and episode success, each with a binomial SE.

Decoding defaults to the checkpoint's own `generation_config.json` (what the paper's evaluation
did); pass `temperature=0` for greedy.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from game.gp.cards import Rule
from game.gp.deal import Deal, evaluation_hands
from game.gp.episode import Episode

from ..chat import gp_chat, next_chat
from ..prompts import gp_prompt
from .data import ChatCodec, virl_data, virl_prompt_of, virl_start

SPLITS = {"id": ("language_id", Rule.FACE10), "ood": ("language_rule_ood", Rule.FACE_JQK)}


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else 0.0


@dataclass
class Generated:
    text: str
    ids: list[int]          # generated token ids, the stop token included when one was produced


def _pick(logits, temperature: float, top_p: float):
    """Greedy (temperature 0) or temperature + nucleus sampling, as transformers does it."""
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1).squeeze(-1)


def generate_batch(model, codec: ChatCodec, contexts: Sequence[list[int]], *, max_new_tokens: int = 256,
                   temperature: float | None = None, top_p: float | None = None) -> list[Generated]:
    """Generate one reply per context (token id lists): left-padded, one KV cache, stops when every
    row has produced a stop token. `temperature=None` uses the checkpoint's generation config
    (sampling settings); `0` is greedy. A lean loop: `model.generate` costs far more per token on
    a tiny model, and evaluation and RL rollouts are generation-bound."""
    import torch

    g = model.generation_config
    if temperature is None:
        temperature = (g.temperature or 1.0) if g.do_sample else 0.0
        top_p = (g.top_p or 1.0) if g.do_sample else 1.0
    top_p = 1.0 if top_p is None else float(top_p)
    eos = g.eos_token_id
    eos_t = torch.tensor(eos if isinstance(eos, list) else [eos])
    device = next(model.parameters()).device
    width = max(len(c) for c in contexts)
    batch = len(contexts)
    ids = torch.full((batch, width), codec.pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for row, ctx in enumerate(contexts):
        ids[row, width - len(ctx):] = torch.tensor(ctx)
        mask[row, width - len(ctx):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    steps: list = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1]
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        pos = positions[:, -1:]
        for _ in range(max_new_tokens):
            tok = _pick(logits, float(temperature), top_p)
            tok = torch.where(done, torch.full_like(tok, codec.pad_id), tok)
            steps.append(tok)
            done |= torch.isin(tok, eos_t.to(device))
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos + 1
            out = model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=pos, cache=cache,
                        use_cache=True)
            cache, logits = out.cache, out.logits[:, -1]
    eos_set = set(eos_t.tolist())
    generated = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(batch)]
    results = []
    for row in generated:
        gen: list[int] = []
        for t in row:
            gen.append(t)
            if t in eos_set:
                break
        text_ids = [t for t in gen if t not in eos_set]
        results.append(Generated(codec.tok.decode(text_ids, skip_special_tokens=True), gen))
    return results


@dataclass
class Turn:
    """One graded try, with what RL needs: the context ids, the reply ids and the reward."""

    episode: int
    context: list[int]
    reply: list[int]
    reward: float


@dataclass
class EpisodeBatch:
    episodes: list[Episode]
    turns: list[Turn] = field(default_factory=list)


def run_episodes(model, codec: ChatCodec, deals: Sequence[Deal], rule: Rule | str = Rule.FACE10, *,
                 batch_size: int = 64, max_new_tokens: int = 256, temperature: float | None = None,
                 top_p: float | None = None, verify_iter: int = 5, progress=None) -> EpisodeBatch:
    """Play one episode per deal with sequential revision; returns episodes and every graded turn."""
    rule = Rule.parse(rule)
    episodes = [Episode(d, rule, verify_iter=verify_iter) for d in deals]
    prompts = [gp_prompt(d.labels, rule, d.target) for d in deals]
    history: list[list[tuple[str, str]]] = [[] for _ in deals]
    batch = EpisodeBatch(episodes)
    while True:
        need = []
        for i, ep in enumerate(episodes):
            if ep.done:
                continue
            if ep.remaining == 0:  # the paper's wasted 6th call: text ignored, -1 step_limit_reached
                ep.step("")
            else:
                need.append(i)
        if not need:
            break
        for start in range(0, len(need), batch_size):
            chunk = need[start:start + batch_size]
            contexts = [codec.chat_ids(gp_chat(prompts[i], history[i])) for i in chunk]
            replies = generate_batch(model, codec, contexts, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p)
            for i, ctx, reply in zip(chunk, contexts, replies):
                record = episodes[i].step(reply.text)
                batch.turns.append(Turn(i, ctx, reply.ids, record.reward))
                if not record.terminated:
                    history[i].append((reply.text, record.verify_info))
            if progress is not None:
                progress(len(chunk))
    return batch


def summarize(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Episode success with its binomial SE, first-try success, tries used, first-try outcomes."""
    n = len(episodes)
    wins = sum(ep.success for ep in episodes)
    first = sum(bool(ep.steps) and ep.steps[0].terminated for ep in episodes)
    p = wins / n if n else 0.0
    tries = [next(i + 1 for i, s in enumerate(ep.steps) if s.terminated) for ep in episodes if ep.success]
    return {
        "n": n, "success": p, "se": binomial_se(p, n), "wins": wins,
        "first_try_success": first / n if n else 0.0,
        "mean_tries_when_solved": sum(tries) / len(tries) if tries else None,
        "mean_return": sum(ep.episode_return for ep in episodes) / n if n else 0.0,
        "first_try_outcomes": dict(Counter(ep.steps[0].verdict.outcome.value for ep in episodes if ep.steps)),
    }


def evaluate_gp(model, tokenizer, split: str = "id", n: int = 500, *, seed: int = 0, batch_size: int = 64,
                max_new_tokens: int = 256, temperature: float | None = None, top_p: float | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Episode success on the `id` or `ood` hand list (first `n` hands of the seed-42 stream)."""
    import torch
    from tqdm.auto import tqdm

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use id or ood")
    config, rule = SPLITS[split]
    deals = evaluation_hands(config, n)
    torch.manual_seed(seed)
    codec = ChatCodec(tokenizer)
    model.eval()
    with tqdm(desc=f"eval {split} ({n} episodes)", unit="call", disable=not progress, dynamic_ncols=True) as bar:
        batch = run_episodes(model, codec, deals, rule, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, progress=bar.update)
    out = summarize(batch.episodes)
    out.update(split=split, rule=rule.value, hands=config, seed=seed,
               decoding=_decoding_label(model, temperature, top_p), max_new_tokens=max_new_tokens)
    return out


# ---------------------------------------------------------------------------------------------
# V-IRL-L

# split -> (route source, absolute actions)
VIRL_SPLITS = {"id": ("bundled:helsinki", True), "ood": ("bundled:helsinki", False),
               "streets": ("bundled:helsinki-ood", True)}


def virl_episodes(split: str, n: int) -> list:
    """The first `n` evaluation episodes of a V-IRL split (episode i: route i mod R, seed i)."""
    if split not in VIRL_SPLITS:
        raise ValueError(f"unknown V-IRL split {split!r}: use {', '.join(VIRL_SPLITS)}")
    source, absolute = VIRL_SPLITS[split]
    data = virl_data(source)
    return [virl_start(data, i % len(data.routes), i, absolute) for i in range(n)]


def virl_return(episode) -> float:
    """The sum of an episode's step rewards (+1 correct, −1 / −1.5 wrong, −1 budget exhausted)."""
    return sum(r.reward for r in episode.records)


def run_virl_episodes(model, codec: ChatCodec, episodes: Sequence, *, batch_size: int = 64,
                      max_new_tokens: int = 256, temperature: float | None = None, top_p: float | None = None,
                      progress=None) -> EpisodeBatch:
    """Play V-IRL-L episodes (fresh `VirlEpisode`s) to the end with the reference conversation flow;
    returns the episodes and every generated, graded call as a `Turn`."""
    chats: list[list | None] = [None] * len(episodes)
    last: list[tuple[str | None, str | None]] = [(None, None)] * len(episodes)   # (reply, verify info)
    batch = EpisodeBatch(list(episodes))
    while True:
        need = []
        for i, ep in enumerate(episodes):
            if ep.done:
                continue
            if ep.remaining == 0:  # the wasted third call: not graded, -1, episode over
                ep.step("")
            else:
                need.append(i)
        if not need:
            break
        for start in range(0, len(need), batch_size):
            chunk = need[start:start + batch_size]
            for i in chunk:
                reply, info = last[i]
                chats[i] = next_chat(chats[i], virl_prompt_of(episodes[i]), verify_info=info, last_reply=reply)
            contexts = [codec.chat_ids(chats[i]) for i in chunk]
            replies = generate_batch(model, codec, contexts, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p)
            for i, ctx, reply in zip(chunk, contexts, replies):
                record = episodes[i].step(reply.text)
                batch.turns.append(Turn(i, ctx, reply.ids, record.reward))
                last[i] = (reply.text, record.verify_info)
            if progress is not None:
                progress(len(chunk))
    return batch


def summarize_virl(episodes: Sequence) -> dict[str, Any]:
    """Per-step accuracy (pooled calls) and episode success, with binomial SEs, and a few details."""
    n = len(episodes)
    calls = sum(ep.n_calls for ep in episodes)
    correct = sum(ep.n_correct for ep in episodes)
    wins = sum(ep.success for ep in episodes)
    acc = correct / calls if calls else 0.0
    p = wins / n if n else 0.0
    first = Counter()
    for ep in episodes:
        for r in ep.records:
            if r.graded and r.reward != 1.0:
                first[r.gt_action.split("(")[0]] += 1
                break
    return {
        "n": n, "success": p, "se": binomial_se(p, n), "wins": wins,
        "per_step_accuracy": acc, "per_step_se": binomial_se(acc, calls), "calls": calls, "correct_calls": correct,
        "mean_episode_accuracy": sum(ep.per_step_accuracy for ep in episodes) / n if n else 0.0,
        "mean_rail_progress": sum(len(ep.history) / max(1, len(ep.rail) - 1) if not ep.success else 1.0
                                  for ep in episodes) / n if n else 0.0,
        "mean_rail_length": sum(len(ep.rail) for ep in episodes) / n if n else 0.0,
        "mean_return": sum(virl_return(ep) for ep in episodes) / n if n else 0.0,
        "first_error_at_gt": dict(first),
    }


def evaluate_virl(model, tokenizer, split: str = "id", n: int = 500, *, seed: int = 0, batch_size: int = 64,
                  max_new_tokens: int = 256, temperature: float | None = None, top_p: float | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Per-step accuracy and episode success on a V-IRL-L split (`id`, `ood`, `streets`)."""
    import torch
    from tqdm.auto import tqdm

    episodes = virl_episodes(split, n)
    torch.manual_seed(seed)
    codec = ChatCodec(tokenizer)
    model.eval()
    with tqdm(desc=f"eval virl {split} ({n} episodes)", unit="call", disable=not progress, dynamic_ncols=True) as bar:
        batch = run_virl_episodes(model, codec, episodes, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, progress=bar.update)
    source, absolute = VIRL_SPLITS[split]
    out = summarize_virl(batch.episodes)
    out.update(split=split, source=source, actions="absolute" if absolute else "relative",
               routes=len(virl_data(source).routes), seed=seed,
               decoding=_decoding_label(model, temperature, top_p), max_new_tokens=max_new_tokens)
    return out


def evaluate(model, tokenizer, task: str, split: str, n: int, **kw) -> dict[str, Any]:
    """`evaluate_gp` or `evaluate_virl` by task."""
    if task == "gp-l":
        return evaluate_gp(model, tokenizer, split, n, **kw)
    if task == "virl-l":
        return evaluate_virl(model, tokenizer, split, n, **kw)
    raise ValueError(f"no evaluation for task {task!r}")


def _decoding_label(model, temperature, top_p) -> str:
    if temperature is not None:
        return "greedy" if temperature <= 0 else f"sampling T={temperature:g}, top-p={top_p or 1.0:g}"
    g = model.generation_config
    if not g.do_sample:
        return "greedy (checkpoint default)"
    return f"sampling T={g.temperature:g}, top-p={g.top_p:g} (checkpoint default)"


def evaluate_checkpoint(path: "str | Path", splits: Sequence[str] = ("id", "ood"), n: int = 500, **kw) -> dict[str, Any]:
    from .common import load_checkpoint

    model, tok = load_checkpoint(path)
    return {s: evaluate_gp(model, tok, s, n, **kw) for s in splits}
