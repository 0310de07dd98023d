"""The batched in-process executor of the evaluation protocol (`game.protocol`), for checkpoints.

What is evaluated is the protocol's, shared with the concurrent HTTP/store executor
(`app.evaluation`): the registry's splits and seeded instance lists (`protocol.instances`), one
registry session per episode (`game.tasks`: prompt, step, done, success), the reference's chat
flow for sequential revision (`models.chat.Conversation`: GP appends the raw reply and `You failed
this trial because …` after a failed try; V-IRL starts a fresh chat after every correct move), and
the metrics with binomial SEs (`protocol.split_metrics`). Both executors visit identical instance
lists, so a table means the same thing whichever made it.

This executor adds what makes checkpoints cheap to score: many episodes advance together, every
round all unfinished episodes are generated in left-padded batches with one KV cache
(`generate_batch`), rendered with the checkpoint's chat template and tokenised as the `local`
backend does (`ChatCodec`). A call whose text the reference ignores (GP's wasted 6th call
`step_limit_reached`, V-IRL's third call on a position, `session.graded_next` False) is made
without generating. The same loop plays GRPO's rollouts (`run_episodes` returns every generated
call as a `Turn`).

Decoding defaults to the checkpoint's own `generation_config.json` (what the paper's evaluation
did); pass `temperature=0` for greedy.

    sftvsrl train eval models/checkpoints/gp-l-rl --task gp-l --split both --n 500
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from game import protocol
from game.tasks import get_task, open_session

from ..chat import Conversation
from .data import ChatCodec


@dataclass
class Generated:
    text: str
    ids: list[int]          # generated token ids, the stop token included when one was produced
    finished: bool = True   # False: no stop token within max_new_tokens (the reply was cut)


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
                   temperature: float | None = None, top_p: float | None = None,
                   pixels: Sequence[dict] | None = None) -> list[Generated]:
    """Generate one reply per context (token id lists): left-padded, one KV cache, stops when every
    row has produced a stop token. `temperature=None` uses the checkpoint's generation config
    (sampling settings); `0` is greedy. A lean loop: `model.generate` costs far more per token on
    a tiny model, and evaluation and RL rollouts are generation-bound. A vision checkpoint gets
    each row's image as `pixels` (`ChatCodec.pixels`): encoded once with the prompt, its
    cross-attention keys and values then stay in the cache."""
    import torch

    from .data import vision_inputs

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
    extra: dict = {}
    if pixels is not None:
        starts = [width - len(ctx) + codec.image_position(ctx) for ctx in contexts]
        extra = {k: v.to(device) for k, v in vision_inputs(pixels, starts, width).items()}
    step_extra = {"cross_attention_mask": extra["cross_attention_mask"][:, -1:]} if extra else {}
    steps: list = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                    **extra)
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
                        use_cache=True, **step_extra)
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
        results.append(Generated(codec.tok.decode(text_ids, skip_special_tokens=True), gen,
                                 bool(gen) and gen[-1] in eos_set))
    return results


@dataclass
class Turn:
    """One generated, graded call, with what RL needs: the context ids, the reply ids, the reward
    (and, for a vision checkpoint, the image's pixel inputs, `ChatCodec.pixels`)."""

    episode: int
    context: list[int]
    reply: list[int]
    reward: float
    pixels: dict | None = None
    finished: bool = True    # the reply ended with a stop token (False: cut at max_new_tokens)


@dataclass
class EpisodeBatch:
    """Registry sessions played to the end, and every generated call."""

    sessions: list
    turns: list[Turn] = field(default_factory=list)

    @property
    def episodes(self) -> list:
        """The engine episodes behind the sessions (`game.gp.episode.Episode`, `VirlEpisode`)."""
        return [s.episode for s in self.sessions]

    def returns(self) -> list[float]:
        """Each episode's return: the sum of its step rewards (the paper's RL return, gamma 1)."""
        return [sum(r.reward for r in s.results) for s in self.sessions]

    def scores(self) -> list[protocol.EpisodeScore]:
        return [protocol.EpisodeScore.of_session(s) for s in self.sessions]


def run_episodes(model, codec: ChatCodec, sessions: Sequence, *, batch_size: int = 64, max_new_tokens: int = 256,
                 temperature: float | None = None, top_p: float | None = None, progress=None) -> EpisodeBatch:
    """Play registry sessions (`game.tasks.open_session`) to the end with the reference's chat
    flow; returns them with every generated, graded call as a `Turn` (`Turn.episode` indexes
    `sessions`). `progress(k)` is called after every generated chunk of k calls. A vision task
    needs a vision checkpoint (its processor as the codec's tokenizer): the session's image goes
    to the model with the chat."""
    if any(s.vision for s in sessions) and not codec.vision:
        raise ValueError("a vision task needs a vision checkpoint (this one is text-only)")
    convs = [Conversation(image=s.vision) for s in sessions]
    batch = EpisodeBatch(list(sessions))
    while True:
        need = []
        for i, s in enumerate(sessions):
            if s.done:
                continue
            if not s.graded_next:  # the reference's ignored call: not generated, -1, episode over
                convs[i].record("", s.step("").feedback)
            else:
                need.append(i)
        if not need:
            break
        for start in range(0, len(need), batch_size):
            chunk = need[start:start + batch_size]
            contexts = [codec.chat_ids(convs[i].messages_for(sessions[i].prompt())) for i in chunk]
            pixels = [codec.pixels(sessions[i].image()) for i in chunk] if codec.vision else None
            replies = generate_batch(model, codec, contexts, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p, pixels=pixels)
            for k, (i, ctx, reply) in enumerate(zip(chunk, contexts, replies)):
                result = sessions[i].step(reply.text)
                batch.turns.append(Turn(i, ctx, reply.ids, result.reward, pixels[k] if pixels else None,
                                        reply.finished))
                convs[i].record(reply.text, result.feedback)
            if progress is not None:
                progress(len(chunk))
    return batch


def evaluate(model, tokenizer, task: str, split: str, n: int | None = None, *, seed: int = 0,
             instance_seed: int | None = None, sources: dict[str, str] | None = None, batch_size: int = 64,
             max_new_tokens: int = 256, temperature: float | None = None, top_p: float | None = None,
             progress: bool = False, keep_episodes: bool = False) -> dict[str, Any]:
    """The protocol's metrics of one checkpoint on one split (`protocol.split_metrics`), plus the
    run's facts: the split, its description, the decoding, the torch `seed`, and per-episode
    success and (correct calls, calls) in instance order (`successes`, `episode_steps`: for paired
    comparisons; GP-VL also (calls with the right cards, calls): `episode_recognition`), the call
    that solved each solved episode (`solved_calls`: 2 or more = after the verifier's feedback) and
    the share of replies that never ended (`unfinished_replies`: no stop token within
    `max_new_tokens`). `n` None: the paper's count;
    `instance_seed` None: the protocol's stream seed (GP 42, V-IRL 0). `keep_episodes`: also
    `episodes`, one `episode_record` per instance (what Inspect shows)."""
    import torch
    from tqdm.auto import tqdm

    spec = get_task(task)
    instances = protocol.instances(task, split, n, instance_seed, sources)
    sessions = [open_session(x) for x in instances]
    torch.manual_seed(seed)
    codec = ChatCodec(tokenizer)
    model.eval()
    with tqdm(desc=f"eval {task} {split} ({len(sessions)} episodes)", unit="call", disable=not progress,
              dynamic_ncols=True) as bar:
        batch = run_episodes(model, codec, sessions, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, progress=bar.update)
    out = protocol.split_metrics(task, batch.scores())
    out.update(task=task, split=split, description=spec.split(split).description,
               first_instance=instances[0].key if instances else None, seed=seed,
               decoding=_decoding_label(model, temperature, top_p), max_new_tokens=max_new_tokens,
               successes=[int(s.success) for s in sessions],
               episode_steps=[[sum(o == "correct" for o in e.outcomes), len(e.outcomes)] for e in batch.scores()],
               solved_calls=[next((k + 1 for k, o in enumerate(e.outcomes) if o == "correct"), None)
                             if s.success else None for s, e in zip(sessions, batch.scores())],
               unfinished_replies=sum(not t.finished for t in batch.turns) / max(1, len(batch.turns)))
    if spec.recognition:   # GP-VL: per episode [calls that read the cards right, calls] (paired recognition)
        out["episode_recognition"] = [[len(e.outcomes) - e.outcomes.count("wrong_cards"), len(e.outcomes)]
                                      for e in batch.scores()]
    if keep_episodes:
        out["episodes"] = [episode_record(s, [t for t in batch.turns if t.episode == i], tokenizer)
                           for i, s in enumerate(sessions)]
    return out


def episode_record(session, turns: Sequence[Turn], tokenizer) -> dict[str, Any]:
    """A played session as plain data: the instance, success, and one `StepRecord` dict per call
    (the reply text decoded from the generated ids; the ignored closing call has no reply)."""
    from dataclasses import asdict

    from game.tasks import StepRecord

    replies = iter(turns)
    steps = []
    for r in session.results:
        turn = next(replies, None) if r.graded else None
        text = tokenizer.decode(turn.reply, skip_special_tokens=True) if turn is not None else ""
        steps.append(asdict(StepRecord(**asdict(r), output=text)))
    return {**session.instance.to_dict(), "instance_key": session.instance.key, "success": bool(session.success),
            "steps": steps}


def evaluate_gp(model, tokenizer, split: str = "id", n: int = 500, **kw) -> dict[str, Any]:
    """`evaluate` on GP-L (episode success on the seed-42 hand list of `split`)."""
    from .tasks import GPLTraining

    return evaluate(model, tokenizer, GPLTraining.name, split, n, **kw)


def _decoding_label(model, temperature, top_p) -> str:
    if temperature is not None:
        return "greedy" if temperature <= 0 else f"sampling T={temperature:g}, top-p={top_p or 1.0:g}"
    g = model.generation_config
    if not g.do_sample:
        return "greedy (checkpoint default)"
    return f"sampling T={g.temperature:g}, top-p={g.top_p:g} (checkpoint default)"


