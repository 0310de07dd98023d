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
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import permutations
from typing import Iterator, Literal

from .cards import SUIT_SETS, Card, Rule
from .solver import reference_solutions

DealMode = Literal["paper", "deck"]
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
        from .cards import rank_from_label

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
        while True:
            cards = self._draw()
            self.draws += 1
            values = [cfg.rule.value_of(c.rank) for c in cards]
            if cfg.mode == "paper":
                # The reference's solver shuffles its sorted distinct permutations first.
                self._rng.shuffle(sorted(set(permutations(values))))
            elif cfg.ood and not any(c.is_face for c in cards):
                continue
            if reference_solutions(values, cfg.target):
                return Deal(cards, cfg.target)  # type: ignore[arg-type]

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
