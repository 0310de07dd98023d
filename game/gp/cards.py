"""Cards, ranks, suits, face-card rules and the GeneralPoints variant settings.

One place for every naming convention of the reference environment:
- internal card ids are suit letter + rank letter (`SK`, `HT`, `DA`);
- "Plain Card" labels are `A`, `2`..`9`, `10`, `J`, `Q`, `K` (the ten is `10`, never `T`);
- values: A = 1; J/Q/K = 10 under the in-distribution rule (`face10`), 11/12/13 under the
  out-of-distribution rule (`face_jqk`).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SUITS = ("H", "S", "D", "C")
SUIT_SETS: dict[str, tuple[str, ...]] = {
    "mixed": ("H", "S", "D", "C"),
    "red": ("H", "D"),
    "black": ("S", "C"),
}
RANK_LETTERS = {1: "A", 10: "T", 11: "J", 12: "Q", 13: "K"}
PLAIN_LABELS = {1: "A", 11: "J", 12: "Q", 13: "K"}
_LABEL_TO_RANK = {"A": 1, "J": 11, "Q": 12, "K": 13, "T": 10, "10": 10}
RED_SUITS = frozenset("HD")


class Rule(str, Enum):
    """How J/Q/K are valued. `face10` is the paper's in-distribution rule."""

    FACE10 = "face10"      # J/Q/K = 10 (in-distribution)
    FACE_JQK = "face_jqk"  # J/Q/K = 11/12/13 (rule out-of-distribution)

    @classmethod
    def parse(cls, text: "str | Rule | bool") -> "Rule":
        """Accept `face10`/`10`/`id`, `face_jqk`/`11-13`/`jqk`/`ood`, or a `treat_face_cards_as_10` bool."""
        if isinstance(text, Rule):
            return text
        if isinstance(text, bool):
            return cls.FACE10 if text else cls.FACE_JQK
        key = str(text).strip().lower()
        if key in {"face10", "10", "id", "face_10"}:
            return cls.FACE10
        if key in {"face_jqk", "11-13", "jqk", "ood", "11/12/13", "face11-13"}:
            return cls.FACE_JQK
        raise ValueError(f"unknown rule {text!r}: use 'face10' (J/Q/K = 10) or 'face_jqk' (11/12/13)")

    @property
    def face_cards_as_10(self) -> bool:
        return self is Rule.FACE10

    def value_of(self, rank: int) -> int:
        return min(rank, 10) if self is Rule.FACE10 else rank

    @property
    def max_value(self) -> int:
        return 10 if self is Rule.FACE10 else 13


def rank_from_label(label: str) -> int:
    """`A`, `2`..`10`, `T`, `J`, `Q`, `K` (any case) → rank 1..13; raises ValueError otherwise."""
    key = str(label).strip().upper()
    if key in _LABEL_TO_RANK:
        return _LABEL_TO_RANK[key]
    if key.isdigit() and 2 <= int(key) <= 9 and key == str(int(key)):
        return int(key)
    raise ValueError(f"unknown card {label!r}: use A, 2-10, J, Q or K")


@dataclass(frozen=True, slots=True)
class Card:
    """One playing card: rank 1..13 and suit H/S/D/C."""

    rank: int
    suit: str

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= 13:
            raise ValueError(f"rank must be 1..13, got {self.rank}")
        if self.suit not in SUITS:
            raise ValueError(f"suit must be one of {SUITS}, got {self.suit!r}")

    @property
    def label(self) -> str:
        """Plain Card label shown to models: `A`, `2`..`10`, `J`, `Q`, `K`."""
        return PLAIN_LABELS.get(self.rank, str(self.rank))

    @property
    def card_id(self) -> str:
        """Reference id: suit + rank letter, e.g. `SK`, `HT`."""
        return self.suit + RANK_LETTERS.get(self.rank, str(self.rank))

    @property
    def is_red(self) -> bool:
        return self.suit in RED_SUITS

    @property
    def is_face(self) -> bool:
        return self.rank >= 11

    @classmethod
    def from_id(cls, card_id: str) -> "Card":
        """Parse a reference id like `SK`, `HT`, `C7` (also `S10`)."""
        text = str(card_id).strip().upper()
        if len(text) < 2 or text[0] not in SUITS:
            raise ValueError(f"bad card id {card_id!r}: expected suit (S/H/D/C) + rank, e.g. SK or HT")
        return cls(rank_from_label(text[1:]), text[0])

    def __str__(self) -> str:
        return self.card_id
