"""Dealing GeneralPoints hands: seeded, reproducible, with short printable ids.

Two dealing modes:
- `paper`: the reference's generator — ranks i.i.d. with replacement (OOD: three from 1..13 plus
  one from 11..13, shuffled), suits from the suit set, the solver's permutation shuffle, redraw
  until solvable — replayed in the reference's exact random-number call order on a *private*
  `random.Random`, so seed 42 reproduces the paper's evaluation hand lists.
- `deck`: a real deck (the 52 cards, or the 26 of one colour), four cards without replacement,
  redrawn until solvable (and, for OOD, until at least one J/Q/K is present).

Global random state is never touched. A `Deal` is just four cards and a target; the face-card
rule is applied on top (`Deal.numbers(rule)`), so one hand can be flipped between rules.

Dealing always terminates. A target no hand can make under the chosen rule and dealing mode
(178 targets in 1..1000 under J/Q/K = 10, e.g. 461) is refused before any card is drawn
(`check_target`: `UnreachableTarget`, naming the nearest reachable targets), every target is
bounded by `MAX_TARGET`, and a dealer gives up after `MAX_DRAWS` raw hands (`DealError`).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from bisect import bisect_left
from functools import lru_cache
from itertools import combinations_with_replacement, permutations, product
from typing import Iterator, Literal

import numpy as np

from .cards import SUIT_SETS, Card, Rule, rank_from_label
from .solver import OPS, _shape_value, reference_solutions

DealMode = Literal["paper", "deck"]
MAX_TARGET = 1000      # the one target limit of every entry (API, UI, CLI) that deals hands
MAX_DRAWS = 200_000    # raw hands one dealer may draw for one solvable hand (a backstop)


class DealError(ValueError):
    """Dealing cannot produce a hand for this configuration (message shown to the user as is)."""


class UnreachableTarget(DealError):
    """No four cards make the target under this rule and dealing mode."""

    def __init__(self, message: str, nearest: list[int]) -> None:
        super().__init__(message)
        self.nearest = nearest

    def __reduce__(self):  # picklable (it crosses the worker-pool boundary)
        return (type(self), (str(self), self.nearest))
_ID_RE = re.compile(r"^((?:[HSDC](?:[2-9AJQKT]|10)){4})(?:-(\d{1,9}))?$")


@dataclass(frozen=True)
class Deal:
    """Four cards (in dealing order) and the target number."""

    cards: tuple[Card, Card, Card, Card]
    target: int = 24

    def __post_init__(self) -> None:
        if len(self.cards) != 4:
            raise ValueError(f"a deal has exactly 4 cards, got {len(self.cards)}")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target <= 0:
            raise ValueError(f"target must be a positive integer, got {self.target!r}")

    @property
    def labels(self) -> list[str]:
        """Plain-Card labels in dealing order (what GP-L shows the model)."""
        return [c.label for c in self.cards]

    @property
    def card_ids(self) -> list[str]:
        return [c.card_id for c in self.cards]

    def numbers(self, rule: Rule | str = Rule.FACE10) -> list[int]:
        """Rule-mapped values in dealing order (the verifier's "Numbers")."""
        rule = Rule.parse(rule)
        return [rule.value_of(c.rank) for c in self.cards]

    def solutions(self, rule: Rule | str = Rule.FACE10) -> tuple[str, ...]:
        return reference_solutions(self.numbers(rule), self.target)

    def is_solvable(self, rule: Rule | str = Rule.FACE10) -> bool:
        return bool(self.solutions(rule))

    @property
    def has_face_card(self) -> bool:
        return any(c.is_face for c in self.cards)

    @property
    def id(self) -> str:
        """Short printable id, e.g. `HKC5D2C4` (target 24) or `HKC5D2C4-30`."""
        base = "".join(self.card_ids)
        return base if self.target == 24 else f"{base}-{self.target}"

    @classmethod
    def from_id(cls, deal_id: str) -> "Deal":
        """Inverse of `id`; raises ValueError with a clear message for malformed ids."""
        text = str(deal_id).strip().upper()
        m = _ID_RE.match(text)
        if not m:
            raise ValueError(
                f"malformed deal id {deal_id!r}: expected four cards as suit+rank (e.g. HKC5D2C4), "
                "optionally followed by -TARGET")
        cards = tuple(Card.from_id(c) for c in re.findall(r"[HSDC](?:10|[2-9AJQKT])", m.group(1)))
        target = int(m.group(2)) if m.group(2) else 24
        return cls(cards, target)  # type: ignore[arg-type]

    @classmethod
    def from_labels(cls, labels: list[str], target: int = 24, suits: list[str] | None = None) -> "Deal":
        """A hand from Plain-Card labels (`K 5 10 A`); suits default to S, H, D, C in turn."""
        if len(labels) != 4:
            raise ValueError(f"give exactly 4 cards, got {len(labels)}")
        suits = suits or ["S", "H", "D", "C"]
        return cls(tuple(Card(rank_from_label(l), s) for l, s in zip(labels, suits)), target)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return " ".join(self.card_ids)


@dataclass(frozen=True)
class DealConfig:
    """Everything that shapes a deal stream: rule, OOD forcing, suit set, mode and target."""

    rule: Rule = Rule.FACE10
    ood: bool = False
    suits: str = "mixed"
    mode: DealMode = "paper"
    target: int = 24

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", Rule.parse(self.rule))
        if self.suits not in SUIT_SETS:
            raise ValueError(f"suits must be one of {sorted(SUIT_SETS)}, got {self.suits!r}")
        if self.mode not in ("paper", "deck"):
            raise ValueError(f"dealing mode must be 'paper' or 'deck', got {self.mode!r}")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target <= 0:
            raise ValueError(f"target must be a positive integer, got {self.target!r}")
        if self.target > MAX_TARGET:
            raise DealError(f"target must be between 1 and {MAX_TARGET}, got {self.target}")

    def describe(self) -> str:
        rule = "J/Q/K = 10" if self.rule is Rule.FACE10 else "J/Q/K = 11/12/13"
        how = "paper dealing" if self.mode == "paper" else f"a real {self.suits} deck"
        return f"{rule}, {how}" + (", a J/Q/K forced" if self.ood else "")


# ------------------------------------------------------------------------- reachable targets
_CODE_BASE = 14          # a sorted rank 4-tuple as one integer (base 14)
_VALUE_BASE = 1 << 16    # above the largest makeable value (13**4 = 28561)


@lru_cache(maxsize=1)
def _value_table() -> dict[int, frozenset[int]]:
    """Every target (a positive integer up to MAX_TARGET, the only ones a deal asks for) each
    sorted 4-tuple of values in 1..13 makes under the reference solver's 7 bracket shapes and 64
    operator triples (one vectorised pass, ~0.6 s, then cached; every app start builds it)."""
    tuples = np.array(list(product(range(1, 14), repeat=4)), dtype=np.int64)
    srt = np.sort(tuples, axis=1)
    code = ((srt[:, 0] * _CODE_BASE + srt[:, 1]) * _CODE_BASE + srt[:, 2]) * _CODE_BASE + srt[:, 3]
    one = np.ones(len(tuples), dtype=np.int64)
    a, b, c, d = [(tuples[:, i].copy(), one) for i in range(4)]
    parts = []
    for o1, o2, o3 in product(OPS, repeat=3):
        for shape in range(7):
            num, den = _shape_value(shape, a, b, c, d, o1, o2, o3)
            ok = den != 0
            sign = np.where(ok, np.sign(den), 1)
            num, den = np.where(ok, num * sign, 0), np.where(ok, den * sign, 1)
            hit = ok & (num > 0) & (num % den == 0) & (num <= MAX_TARGET * den)
            parts.append(code[hit] * _VALUE_BASE + num[hit] // den[hit])
    table: dict[int, set[int]] = {}
    for packed in np.unique(np.concatenate(parts)).tolist():
        table.setdefault(packed // _VALUE_BASE, set()).add(packed % _VALUE_BASE)
    return {k: frozenset(v) for k, v in table.items()}


def _code(values) -> int:
    a, b, c, d = sorted(values)
    return ((a * _CODE_BASE + b) * _CODE_BASE + c) * _CODE_BASE + d


@lru_cache(maxsize=64)
def reachable_targets(config: "DealConfig") -> tuple[int, ...]:
    """Sorted targets (1..MAX_TARGET) some hand of this configuration can make: the rank
    multisets the mode can deal (a colour deck holds each rank twice; OOD forces a J/Q/K),
    mapped by the rule, solved by the reference solver's expression set."""
    table = _value_table()
    per_rank = 4 if config.mode == "paper" or config.suits == "mixed" else len(SUIT_SETS[config.suits])
    out: set[int] = set()
    for ranks in combinations_with_replacement(range(1, 14), 4):
        if config.ood and max(ranks) < 11:
            continue
        if config.mode == "deck" and max(ranks.count(r) for r in ranks) > per_rank:
            continue
        out |= table.get(_code([config.rule.value_of(r) for r in ranks]), frozenset())
    return tuple(sorted(t for t in out if t <= MAX_TARGET))


def nearest_reachable(config: "DealConfig", target: int, n: int = 2) -> list[int]:
    """Up to `n` reachable targets on each side of `target`, nearest first."""
    reach = reachable_targets(config)
    i = bisect_left(reach, target)
    below, above = list(reach[max(0, i - n):i]), list(reach[i:i + n])
    return sorted(below + above, key=lambda t: (abs(t - target), t))


def check_target(config: "DealConfig") -> None:
    """Raise `UnreachableTarget` (with the nearest reachable targets) when no hand of this
    configuration can make its target; cheap after the first call (cached)."""
    reach = reachable_targets(config)
    i = bisect_left(reach, config.target)
    if i < len(reach) and reach[i] == config.target:
        return
    nearest = nearest_reachable(config, config.target)
    raise UnreachableTarget(
        f"no four cards make {config.target} under {config.describe()}; nearest reachable targets: "
        + ", ".join(str(t) for t in nearest), nearest)


class Dealer:
    """A deterministic stream of solvable hands from one seed (private generator)."""

    def __init__(self, seed: int, config: DealConfig | None = None) -> None:
        self.config = config or DealConfig()
        self.seed = seed
        self._rng = random.Random(seed)
        self._suit_list = list(SUIT_SETS[self.config.suits])
        if self.config.mode == "deck":
            self._deck = [Card(rank, suit) for suit in self._suit_list for rank in range(1, 14)]
        self._draw = self._paper_hand if self.config.mode == "paper" else self._deck_hand
        self.draws = 0  # raw hands drawn, rejected ones included

    def _paper_hand(self) -> tuple[Card, ...]:
        rng = self._rng
        if self.config.ood:
            ranks = [rng.randint(1, 13) for _ in range(3)] + [rng.randint(11, 13)]
            rng.shuffle(ranks)
        else:
            ranks = [rng.randint(1, 13) for _ in range(4)]
        suits = [rng.choice(self._suit_list) for _ in range(4)]
        return tuple(Card(r, s) for r, s in zip(ranks, suits))

    def _deck_hand(self) -> tuple[Card, ...]:
        return tuple(self._rng.sample(self._deck, 4))

    def next(self) -> Deal:
        cfg = self.config
        if self.draws == 0:
            check_target(cfg)
        table = _value_table()
        for _ in range(MAX_DRAWS):
            cards = self._draw()
            self.draws += 1
            values = [cfg.rule.value_of(c.rank) for c in cards]
            if cfg.mode == "paper":
                # The reference's solver shuffles its sorted distinct permutations first.
                self._rng.shuffle(sorted(set(permutations(values))))
            elif cfg.ood and not any(c.is_face for c in cards):
                continue
            # The table is built from the reference solver's own expression set: same verdict as
            # `reference_solutions(values, target)`, without solving each rejected hand.
            if cfg.target in table.get(_code(values), ()):
                return Deal(cards, cfg.target)  # type: ignore[arg-type]
        raise DealError(f"no solvable hand for target {cfg.target} in {MAX_DRAWS} draws ({cfg.describe()}); "
                        "try a more common target")

    def __iter__(self) -> Iterator[Deal]:
        while True:
            yield self.next()

    def take(self, n: int) -> list[Deal]:
        return [self.next() for _ in range(n)]


def deal(seed: int, config: DealConfig | None = None, **kwargs) -> Deal:
    """The first hand of the stream seeded with `seed` (kwargs build a `DealConfig`)."""
    if config is None:
        config = DealConfig(**kwargs)
    elif kwargs:
        raise TypeError("pass either a DealConfig or keyword settings, not both")
    return Dealer(seed, config).next()


# The paper's five GeneralPoints evaluation configurations (`scripts/gp_evaluation/*.sh`).
EVAL_CONFIGS: dict[str, DealConfig] = {
    "language_id": DealConfig(Rule.FACE10, ood=False, suits="mixed"),
    "language_rule_ood": DealConfig(Rule.FACE_JQK, ood=True, suits="mixed"),
    "vl_id_black": DealConfig(Rule.FACE10, ood=False, suits="black"),
    "vl_rule_ood_black": DealConfig(Rule.FACE_JQK, ood=True, suits="black"),
    "vl_visual_ood_red": DealConfig(Rule.FACE10, ood=False, suits="red"),
}
PAPER_EPISODES = 234
PAPER_SEED = 42


def evaluation_hands(config: str, n: int = PAPER_EPISODES, seed: int = PAPER_SEED, *,
                     include_constructor_hand: bool = False) -> list[Deal]:
    """The paper's evaluation hand list for `config` (see `EVAL_CONFIGS`).

    The reference environment's constructor already deals one hand before the first episode;
    it is skipped unless `include_constructor_hand` is set.
    """
    if config not in EVAL_CONFIGS:
        raise ValueError(f"unknown evaluation config {config!r}; choose from {sorted(EVAL_CONFIGS)}")
    dealer = Dealer(seed, EVAL_CONFIGS[config])
    first = dealer.next()
    hands = dealer.take(n)
    return [first, *hands] if include_constructor_hand else hands
