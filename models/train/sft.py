"""Supervised fine-tuning: the one SFT loop (`fit`) every supervised stage of the staged pipeline
trains with — base, Init, SFT and SFT-diverse, text and image-text (`models.train.pipeline`) — and
its text batches (`TextBatches`: the prompt prefix every example shares run once per batch, the
output layer only where there is a label, `answer_loss`; batches of similar length,
`length_batches`).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

from .common import Compute, cosine_lr
from .data import ChatCodec

__all__ = ["TextBatches", "answer_loss", "fit"]


def common_prefix(examples: list[tuple[list[int], list[int]]]) -> list[int]:
    """The token prefix every example shares (the chat header and the prompt up to the cards),
    stopping before the first answer token."""
    first_ids, first_labels = examples[0]
    n = next((i for i, y in enumerate(first_labels) if y != -100), len(first_ids)) - 1
    for ids, _ in examples[1:]:
        while n and ids[:n] != first_ids[:n]:
            n -= 1
    return first_ids[:n]


def answer_loss(model, prefix, ids, mask, labels):
    """Causal-LM loss of a batch whose rows all start with `prefix` (given without it): the prefix is
    run once, its keys/values are broadcast to the batch, and gradients flow through both parts
    (the constant prompt is most of every example). The output layer is applied only where there
    is a label: on a tiny model with a few-thousand-token vocabulary the logits of every prompt
    position cost more than the network itself. Same loss as a full forward pass (mean
    cross-entropy over the labelled tokens)."""
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
    off and run once per batch (`answer_loss`); batches are length-bucketed (`length_batches`,
    seeded by `seed`). Iterating gives one `step(model) -> (loss, token positions trained)` per
    batch (what `fit` runs)."""

    def __init__(self, codec: ChatCodec, examples: list[tuple[list[int], list[int]]], batch_size: int,
                 seed: int) -> None:
        import torch

        self.pad_id = codec.pad_id
        self.prefix = torch.tensor(common_prefix(examples))
        cut = [(x[len(self.prefix):], y[len(self.prefix):]) for x, y in examples]
        self.batches = length_batches(cut, batch_size, seed)

    @classmethod
    def from_pairs(cls, codec: ChatCodec, pairs: Sequence, batch_size: int, seed: int, *,
                   prompt_loss: bool = False) -> "TextBatches":
        """From (prompt, answer) pairs or `data.Example`s (with failed tries before the answer),
        shuffled by `seed` (`random.Random`); `prompt_loss`: prompt tokens are labels too (the
        tokens every example shares, cut off as the prefix, never are)."""
        examples = [codec.sft_example(x[0], x[1], history=x[2] if len(x) > 2 else (), prompt_loss=prompt_loss)
                    for x in pairs]
        random.Random(seed).shuffle(examples)
        return cls(codec, examples, batch_size, seed)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Callable]:
        for chunk in self.batches:
            ids, mask, labels = pad_batch(chunk, self.pad_id)

            def step(model, ids=ids, mask=mask, labels=labels):
                return answer_loss(model, self.prefix, ids, mask, labels), len(self.prefix) + int(mask.sum())
            yield step


def fit(model, batches, *, steps: int, lr: float, warmup_steps: int, min_lr_ratio: float, weight_decay: float,
        grad_clip: float, desc: str, progress: bool, compute: Compute | None = None,
        on_step: Callable[[int, Any], None] | None = None) -> list[float]:
    """The one SFT loop (every supervised stage, text and image-text): one pass over `batches`
    (`TextBatches`, `vision.ImageTextBatches`: sized, each item a `step(model) -> (loss, tokens)`),
    AdamW (betas 0.9 / 0.98, no weight decay on vectors) with linear warm-up over `warmup_steps`
    and cosine decay to `min_lr_ratio` over `steps`, gradient-norm clipping at `grad_clip`.
    `on_step(step, model)` runs once before training (step 0) and after every optimizer step
    (1-based; snapshots). Counts the trained token positions in `compute`; returns the per-step
    losses."""
    import torch
    from tqdm.auto import tqdm

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
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
