"""The training side of the task registry: what the tiny trainers need per task, in one table.

`game.tasks` owns what a task *is* (configs, splits, sessions, grading); this module owns what
training a tiny checkpoint on it needs and nothing else branches on a task name for it:

- `sft` / `grpo`: the task's changes to `SFTConfig` / `GRPOConfig` defaults, as (full, `--quick`);
- `corpus(seed, size)`: the text the compact tokenizer is trained on; `tokenizer_split`: the
  pre-tokenizer rule (`models.tiny.train_tokenizer(compact=…)`);
- `expert_pairs(n, seed)`: `n` single-turn expert (prompt, answer) pairs and facts for the record;
- `rollouts(cfg)`: the seeded stream of in-distribution training instances GRPO plays: the
  registry's `training_stream` (`game.tasks`, the one definition the trainer adapters use too),
  opened as registry sessions like every evaluation episode;
- `model_card(...)`: the model card text of a checkpoint trained on the task.

    from models.train.tasks import training_task
    t = training_task("virl-l")      # ValueError naming the trainable tasks otherwise
    t.grpo[0]["verify_iter"]         # 2: the paper's tries per V-IRL position

Only the text tasks have tiny checkpoints (`TRAINING`: gp-l, virl-l).
"""
from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any, Callable, ClassVar

from game.tasks import Instance, get_task

# Seed bases of the training streams (evaluation streams: GP seed 42, V-IRL episode seeds < 10,000).
SFT_SEED_OFFSET = 1000        # SFT expert data: config seed + 1000
RL_SEED_OFFSET = 2000         # GRPO hands (GP-L): config seed + 2000


class TrainingTask:
    """One trainable task. Subclasses fill in the class attributes and the methods."""

    name: ClassVar[str]
    sft: ClassVar[tuple[dict[str, Any], dict[str, Any]]] = ({}, {})
    grpo: ClassVar[tuple[dict[str, Any], dict[str, Any]]] = ({}, {})
    tokenizer_split: ClassVar["bool | str"] = True
    label: ClassVar[str]            # short name in model cards, e.g. "GP-L"
    rl_seed_offset: ClassVar[int] = 0   # GRPO's training stream seed: config seed + this

    @property
    def spec(self):
        return get_task(self.name)

    def corpus(self, seed: int, size: int) -> list[str]:
        raise NotImplementedError

    def expert_pairs(self, n: int, seed: int) -> tuple[list, dict[str, Any]]:
        raise NotImplementedError

    def rollouts(self, cfg) -> Callable[[int], list[Instance]]:
        """A seeded `take(n)` of in-distribution training instances for GRPO config `cfg`: the next
        `n` of the registry's training stream (seed `cfg.seed + rl_seed_offset`)."""
        stream = self.spec.training_stream(cfg.seed + self.rl_seed_offset, verify_iter=cfg.verify_iter)
        return lambda n: list(islice(stream, n))

    def model_card(self, path, rec: dict, evaluation: dict | None, *, name: str, repro: str) -> str:
        raise NotImplementedError


class GPLTraining(TrainingTask):
    """GP-L: hands from seeded `Dealer`s under J/Q/K = 10, expert formulas from our solver."""

    name, label = "gp-l", "GP-L"
    rl_seed_offset = RL_SEED_OFFSET

    def corpus(self, seed: int, size: int) -> list[str]:
        from .data import gp_corpus

        return gp_corpus(seed, size)

    def expert_pairs(self, n: int, seed: int) -> tuple[list, dict[str, Any]]:
        from .data import sft_pairs

        pairs = sft_pairs(n, seed)
        return pairs, {"distinct_hands": len({p.deal.id for p in pairs}),
                       "distinct_value_multisets": len({tuple(sorted(p.deal.numbers())) for p in pairs})}

    def model_card(self, path, rec, evaluation, *, name, repro):
        from .card import gp_model_card

        return gp_model_card(path, rec, evaluation, name=name, repro=repro)


class VirlLTraining(TrainingTask):
    """V-IRL-L: episodes on the bundled Helsinki routes with absolute actions, golden replies."""

    name, label = "virl-l", "V-IRL-L"
    # ~190-token prompts (vs ~100), so smaller batches; a larger vocabulary holds the street and
    # landmark names (the BPE saturates below 2,048). One torch thread: next to another busy
    # process on 2 cores, 2 threads ran ~4x slower than 1 (measured 4.2 s vs 0.9 s per step).
    sft = (dict(steps=1800, batch_size=24, lr=2e-3, warmup_steps=60, vocab_size=2048, corpus_hands=400, threads=1),
           dict(vocab_size=900, corpus_hands=20, threads=1))
    # 2 graded tries per position (the shipped verify_iter); answers are ~18 tokens.
    grpo = (dict(updates=20, hands_per_update=8, group_size=6, verify_iter=2, max_new_tokens=48, threads=1),
            dict(verify_iter=2, threads=1))

    @property
    def tokenizer_split(self):  # capitalised words, directions, actions, digits as pieces
        from ..tiny import VIRL_SPLIT

        return VIRL_SPLIT

    def corpus(self, seed: int, size: int) -> list[str]:
        from .data import virl_corpus

        return virl_corpus(seed, size)

    def expert_pairs(self, n: int, seed: int) -> tuple[list, dict[str, Any]]:
        from .data import virl_sft_pairs

        episodes = n // 4 + 1                                  # ~6 rail positions per episode
        pairs = virl_sft_pairs(episodes, seed)
        while len(pairs) < n:                                  # a longer prefix of the same seeded stream
            episodes *= 2
            pairs = virl_sft_pairs(episodes, seed)
        pairs = pairs[:n]
        walked = {(p.route_index, p.seed) for p in pairs}
        return pairs, {"episodes": len(walked), "distinct_routes": len({r for r, _ in walked}),
                       "actions": dict(sorted(Counter(p.gt_action.split("(")[0] for p in pairs).items()))}

    def model_card(self, path, rec, evaluation, *, name, repro):
        from .card import virl_model_card

        return virl_model_card(path, rec, evaluation, name=name, repro=repro)


TRAINING: dict[str, TrainingTask] = {t.name: t for t in (GPLTraining(), VirlLTraining())}


def training_task(task: str, what: str = "tiny trainer") -> TrainingTask:
    """The training entry of `task`; a `ValueError` naming the trainable tasks otherwise."""
    try:
        return TRAINING[task]
    except (KeyError, TypeError):
        raise ValueError(f"the {what} supports tasks {', '.join(TRAINING)}, not {task!r}") from None
