"""Supervised fine-tuning: the one SFT loop (`fit`) every supervised stage trains with — the staged
pipeline's base, Init, SFT and SFT-diverse, text and image-text (`models.train.pipeline`), and the
V-IRL-L / GP-L pair's SFT (`train_sft`) — and its text batches (`TextBatches`: the shared prompt
prefix run once per batch, the output layer only where there is a label, `answer_loss`).

`train_sft` is the pair's SFT (the paper's SFT, scaled down, from random weights): GP-L: one pass
over fresh in-distribution hands (J/Q/K = 10): the paper-exact prompt in the chat template, the
`ResponseEqn` answer with the canonical expert formula (`data.expert_formula`). V-IRL-L: one pass
over the single-turn expert pairs of fresh training episodes on the bundled Helsinki routes with
absolute actions (`data.virl_sft_pairs`): the paper-exact prompt at every rail position (golden
history so far), the `ResponseVIRL` answer with the golden action. Answer then `<|eot_id|>`,
cross-entropy on the answer tokens only (every position's logits: `shared_prefix_loss`, as the
shipped V-IRL-L SFT was trained), consecutive batches, AdamW with warm-up and cosine decay. The
tokenizer is trained on the task's own corpus (`TrainingTask.corpus`). Hyper-parameters:
`SFTConfig` (`models.train.config`; the task's `sft` preset), `quick_config(True, …)` the
seconds-long variant the tests use.

The pair stays its own entry point (`sftvsrl train sft` / `train rl --init`), not a preset of the
pipeline: its tokenizer corpus, expert data, batching, loss and record differ from every
pipeline stage, and the shipped `virl-l-pair-sft` / `virl-l-pair-rl` are its checkpoints. It shares the
loop (`fit`), the GRPO (`models.train.grpo`) and the preset mechanism.

    sftvsrl train sft --task gp-l --out models/checkpoints/gp-l-sft
    sftvsrl train sft --task virl-l --out models/checkpoints/virl-l-pair-sft
    sftvsrl train sft --task virl-l --print-config
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .common import (Compute, Stopwatch, cosine_lr, environment, load_checkpoint, loss_curve, n_params,
                     save_checkpoint, setup_torch)
from .config import SFTConfig
from .data import ChatCodec
from .tasks import DEFAULT_TASK, SFT_SEED_OFFSET, training_task

__all__ = ["SFTConfig", "TextBatches", "fit", "train_sft", "quick_config"]


def build_init(cfg: SFTConfig, out: "str | Path") -> Path:
    """The randomly initialised starting checkpoint (tokenizer trained on the task corpus)."""
    from ..tiny import build_tiny_llama, train_tokenizer

    task = training_task(cfg.task, "tiny SFT")
    tokenizer = train_tokenizer(task.corpus(cfg.seed, cfg.corpus_hands), cfg.vocab_size,
                                compact=task.tokenizer_split)
    return build_tiny_llama(out, tokenizer=tokenizer, generation=cfg.generation(), **cfg.model_kwargs())


def expert_pairs(cfg: SFTConfig) -> tuple[list, dict[str, Any]]:
    """`steps * batch_size` expert (prompt, answer) pairs for the task, and facts for the record."""
    return training_task(cfg.task, "tiny SFT").expert_pairs(cfg.steps * cfg.batch_size, cfg.seed + SFT_SEED_OFFSET)


def common_prefix(examples: list[tuple[list[int], list[int]]]) -> list[int]:
    """The token prefix every example shares (the chat header and the prompt up to the cards),
    stopping before the first answer token."""
    first_ids, first_labels = examples[0]
    n = next((i for i, y in enumerate(first_labels) if y != -100), len(first_ids)) - 1
    for ids, _ in examples[1:]:
        while n and ids[:n] != first_ids[:n]:
            n -= 1
    return first_ids[:n]


def shared_prefix_loss(model, prefix, ids, mask, labels):
    """Causal-LM loss of a batch whose rows all start with `prefix` (given without it): the prefix is
    run once, its keys/values are broadcast to the batch, and gradients flow through both parts.
    Same loss as a full forward pass, at a fraction of the cost (the constant prompt is most of
    every example)."""
    import torch
    from transformers import DynamicCache

    batch, width = ids.shape
    cache = model(input_ids=prefix.unsqueeze(0), use_cache=True).cache
    shared = DynamicCache([(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                           for layer in cache.layers])
    n = prefix.shape[0]
    full_mask = torch.cat([torch.ones((batch, n), dtype=mask.dtype, device=mask.device), mask], dim=1)
    positions = torch.arange(n, n + width, device=ids.device).unsqueeze(0).expand(batch, -1)
    return model(input_ids=ids, attention_mask=full_mask, cache=shared, position_ids=positions,
                 labels=labels, use_cache=False).loss


def answer_loss(model, prefix, ids, mask, labels):
    """`shared_prefix_loss`, with the output layer applied only where there is a label: on a
    tiny model with a few-thousand-token vocabulary the logits of every prompt position cost more
    than the network itself. Same loss (mean cross-entropy over the labelled tokens)."""
    import torch
    from transformers import DynamicCache

    batch, width = ids.shape
    n = prefix.shape[0]
    if n:
        cache = model(input_ids=prefix.unsqueeze(0), use_cache=True).cache
        shared = DynamicCache([(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                               for layer in cache.layers])
    else:
        shared = None
    full_mask = torch.cat([torch.ones((batch, n), dtype=mask.dtype, device=mask.device), mask], dim=1)
    positions = torch.arange(n, n + width, device=ids.device).unsqueeze(0).expand(batch, -1)
    hidden = model.model(input_ids=ids, attention_mask=full_mask, cache=shared, position_ids=positions,
                         use_cache=False).last_hidden_state                      # [B, W, H]
    target = labels[:, 1:]                                                         # position t predicts t + 1
    keep = target != -100
    logits = model.lm_head(hidden[:, :-1][keep]).float()                           # [N, V]
    return torch.nn.functional.cross_entropy(logits, target[keep])


def length_batches(examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int,
                   window: int = 64) -> list[list[tuple[list[int], list[int]]]]:
    """Batches of similar length (little padding): the shuffled examples are cut into windows of
    `window` batches, each window sorted by length and split into batches; the batch order is then
    shuffled, so the data order stays random at the scale of a window."""
    rng = random.Random(f"length-batches:{seed}")
    out = []
    span = batch_size * window
    for i in range(0, len(examples) - batch_size + 1, span):
        chunk = sorted(examples[i:i + span], key=lambda e: len(e[0]))
        out += [chunk[k:k + batch_size] for k in range(0, len(chunk) - batch_size + 1, batch_size)]
    rng.shuffle(out)
    return out


def pad_batch(chunk: list[tuple[list[int], list[int]]], pad_id: int):
    """(ids, mask, labels) tensors of one batch, right-padded to its longest example."""
    import torch

    width = max(len(ids) for ids, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chunk), width), -100, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, (x, y) in enumerate(chunk):
        ids[row, :len(x)] = torch.tensor(x)
        labels[row, :len(y)] = torch.tensor(y)
        mask[row, :len(x)] = 1
    return ids, mask, labels


class TextBatches:
    """The batches of tokenised chats (`ChatCodec.sft_example`: prompt — or a revision chat — then
    the answer), in training order: the token prefix every example shares (`common_prefix`) is cut
    off and run once per batch (`loss(model, prefix, ids, mask, labels)`: `answer_loss`, or
    `shared_prefix_loss` with every position's logits); batches are length-bucketed
    (`length_batches`, seeded by `seed`) or, with `bucketed` False, consecutive. Iterating gives one
    `step(model) -> (loss, token positions trained)` per batch (what `fit` runs)."""

    def __init__(self, codec: ChatCodec, examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int, *,
                 bucketed: bool = True, loss: Callable = answer_loss, device: str = "cpu") -> None:
        import torch

        self.pad_id, self.loss, self.device = codec.pad_id, loss, device
        self.prefix = torch.tensor(common_prefix(examples), device=device)
        cut = [(x[len(self.prefix):], y[len(self.prefix):]) for x, y in examples]
        self.batches = length_batches(cut, batch_size, seed) if bucketed else \
            [cut[i:i + batch_size] for i in range(0, len(cut) - batch_size + 1, batch_size)]

    @classmethod
    def from_pairs(cls, codec: ChatCodec, pairs: Sequence, batch_size: int, seed: int, *, prompt_loss: bool = False,
                   **kw) -> "TextBatches":
        """From (prompt, answer) pairs or `data.Example`s (with failed tries before the answer),
        shuffled by `seed` (`random.Random`); `prompt_loss`: prompt tokens are labels too (the
        tokens every example shares, cut off as the prefix, never are)."""
        examples = [codec.sft_example(x[0], x[1], history=x[2] if len(x) > 2 else (), prompt_loss=prompt_loss)
                    for x in pairs]
        random.Random(seed).shuffle(examples)
        return cls(codec, examples, batch_size, seed, **kw)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Callable]:
        for chunk in self.batches:
            ids, mask, labels = pad_batch(chunk, self.pad_id)

            def step(model, ids=ids, mask=mask, labels=labels):
                dev = self.device
                loss = self.loss(model, self.prefix, ids.to(dev), mask.to(dev), labels.to(dev))
                return loss, len(self.prefix) + int(mask.sum())
            yield step


def fit(model, batches, *, steps: int, lr: float, warmup_steps: int, min_lr_ratio: float, weight_decay: float,
        grad_clip: float, desc: str, progress: bool, compute: Compute | None = None,
        betas: tuple[float, float] = (0.9, 0.98), on_step: Callable[[int, Any], None] | None = None) -> list[float]:
    """The one SFT loop (every supervised stage, text and image-text): one pass over `batches`
    (`TextBatches`, `vision.ImageTextBatches`: sized, each item a `step(model) -> (loss, tokens)`),
    AdamW (no weight decay on vectors) with linear warm-up over `warmup_steps` and cosine decay to
    `min_lr_ratio` over `steps`, gradient-norm clipping at `grad_clip`. `on_step(step, model)` runs
    once before training (step 0) and after every optimizer step (1-based; snapshots). Counts the
    trained token positions in `compute`; returns the per-step losses."""
    import torch
    from tqdm.auto import tqdm

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, warmup_steps, min_lr_ratio))
    if on_step:
        on_step(0, model)
    model.train()
    losses: list[float] = []
    total = len(batches)
    bar = tqdm(total=total, desc=desc, disable=not progress, dynamic_ncols=True)
    for step, batch in enumerate(batches, start=1):
        loss, tokens = batch(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if compute is not None:
            compute.train_tokens += tokens
        bar.update(1)
        if step % 5 == 0 or step == total:
            recent = losses[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if on_step:
            model.eval()
            on_step(step, model)
            model.train()
    bar.close()
    model.eval()
    return losses


def train_sft(cfg: SFTConfig, out: "str | Path", *, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Train and save an SFT checkpoint to `out`; returns the training record (also `training.json`).

    The shipped checkpoints were trained on CPU; `device` exists for hyper-parameter sweeps. The
    loop is the pipeline's (`fit`), on consecutive batches with the full-logit loss
    (`shared_prefix_loss`), as these checkpoints were trained."""
    setup_torch(cfg.seed, cfg.threads)
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = load_checkpoint(build_init(cfg, Path(tmp) / "init"))
    model.to(device)
    codec = ChatCodec(tok)
    pairs, facts = expert_pairs(cfg)
    examples = [codec.sft_example(p.prompt, p.answer) for p in pairs]
    random.Random(cfg.seed).shuffle(examples)
    prep_s = watch.elapsed()
    lengths = [len(x) for x, _ in examples]
    batches = TextBatches(codec, examples, cfg.batch_size, cfg.seed, bucketed=False, loss=shared_prefix_loss,
                          device=device)
    answer_tokens = [sum(1 for t in y if t != -100) for _, y in examples]
    train_watch = Stopwatch()
    losses = fit(model, batches, steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                 min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                 betas=cfg.betas, desc="sft", progress=progress)
    train_s = train_watch.elapsed()
    model.to("cpu")
    record = {
        "kind": "sft", "task": cfg.task, "config": asdict(cfg), "parameters": n_params(model),
        "examples": len(examples), **facts,
        "mean_tokens_per_example": sum(lengths) / len(lengths), "shared_prefix_tokens": len(batches.prefix),
        "mean_answer_tokens": sum(answer_tokens) / len(answer_tokens),
        "steps": len(losses), "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "loss_curve": loss_curve(losses, 50),
        "prep_s": round(prep_s, 1), "train_s": round(train_s, 1), "wall_s": round(watch.elapsed(), 1),
        "steps_per_s": round(len(losses) / train_s, 3) if train_s else None,
        "environment": environment(),
    }
    save_checkpoint(model, tok, out, record)
    return record


def quick_config(quick: bool, seed: int, task: str = DEFAULT_TASK, **overrides) -> SFTConfig:
    """The full (or `--quick`) config of `task` (its training entry's `sft` preset), then any
    non-None `overrides`."""
    return SFTConfig.for_task(task, quick=quick, seed=seed, **overrides)
