"""Shared helpers for the training code: seeding, CPU threads, checkpoint save/load, the
learning-rate schedule, compute accounting (`Compute`), loss curves, and the `training.json` record
written beside every checkpoint."""
from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def setup_torch(seed: int, threads: int = 2) -> None:
    """Seed Python, numpy and torch; cap torch at `threads` CPU threads (shared machines), and
    never above the process's `OMP_NUM_THREADS` when that is set (the test suite sets 1: on a
    busy 2-core machine, 2 intra-op threads run several times slower than 1)."""
    import numpy as np
    import torch

    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) > 0:
        threads = min(int(threads), int(limit))
    torch.set_num_threads(max(1, int(threads)))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier for the base LR: linear warm-up, then cosine decay to `min_ratio`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def load_checkpoint(path: "str | Path"):
    """(model, tokenizer) from a Hugging Face checkpoint directory, float32 on CPU. A vision
    checkpoint (`model_type` mllama) gives (`MllamaForConditionalGeneration`, its processor): the
    processor tokenises like its tokenizer and `ChatCodec` takes its image processor from it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "mllama":
        from transformers import AutoProcessor, MllamaForConditionalGeneration

        return (MllamaForConditionalGeneration.from_pretrained(path, dtype=torch.float32),
                AutoProcessor.from_pretrained(path))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok


def save_checkpoint(model, tokenizer, out: "str | Path", record: dict[str, Any]) -> Path:
    """Write the model (safetensors), tokenizer, chat template, generation config and `training.json`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def read_record(path: "str | Path") -> dict[str, Any]:
    f = Path(path) / "training.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


def environment() -> dict[str, Any]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads()}


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def loss_curve(losses: list[float], every: int = 25) -> list[float]:
    """The per-step losses averaged over consecutive windows of `every` steps (5 decimals): the
    `loss_curve` of a `training.json`."""
    return [round(sum(losses[i:i + every]) / len(losses[i:i + every]), 5) for i in range(0, len(losses), every)]


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
