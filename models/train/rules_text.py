"""The face-card rule in many words: the training grammar of the GP base and SFT-diverse corpora.

A tiny model that only ever reads the paper's sentence (`'J', 'Q', and 'K' count as '10'.`) learns
that sentence, not the rule: reworded, it is a string it never saw. The staged pipeline's base
(`models.train.pipeline`) therefore states every hand's face-card mapping J/Q/K = (a, b, c) in a
phrasing drawn from this grammar: the paper's own sentences (a regular share), and clauses built from
many verbs ("count as", "are worth", "take the value", …), name forms ('J', J, "J", jack, Jacks,
the face cards, …), number forms ('10', 10, ten, 10 points), word orders (any order of J, Q and K,
the value first, imperatives, `J=7, Q=9, K=12`), prefixes and suffixes, and sometimes a short
sentence of ordinary English beside the clause (`corpora/english.txt.gz`, from WordNet) that the
model must learn to read past.

What it never produces (tests check every training stream): a clause containing one of
`game.gp.phrasings.RESERVED` (the constructions of the held-out `reworded` split, whose clauses are
`game.gp.phrasings.REWORDED`), and the rule-OOD mapping J/Q/K = 11/12/13 (excluded by the callers'
mappings; `clause` refuses it).

    rng = random.Random(0)
    clause((10, 10, 10), rng)      # e.g. "jacks, queens and kings are all worth ten"
    clause((7, 9, 12), rng)        # e.g. "K = 12, J = 7, Q = 9"
"""
from __future__ import annotations

import gzip
import random
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from game.gp.cards import Rule
from game.gp.phrasings import RESERVED
from game.prompts import FACE_CARD_MSG

OOD_MAPPING = (11, 12, 13)            # the evaluation's rule-OOD mapping: never in any training data
ENGLISH = Path(__file__).with_name("corpora") / "english.txt.gz"

_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
          10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen"}
_FACE_WORDS = {"J": "jack", "Q": "queen", "K": "king"}

# verbs after a plural subject / a singular subject, and what follows them (a number)
_VERB_PL = ("count as", "are worth", "are valued at", "have a value of", "are", "equal", "are counted as",
            "are treated as", "are set to", "take the value", "represent", "mean", "are given the value",
            "get", "are assigned", "correspond to", "become", "are taken as", "should be counted as",
            "must be treated as", "are all worth", "all count as", "each count as", "each have a value of",
            "are each worth", "all equal", "all have the value", "go as", "work as", "are used as",
            "are evaluated as", "are considered", "are considered to be", "have the value")
_VERB_SG = ("counts as", "is worth", "is valued at", "has a value of", "is", "equals", "is counted as",
            "is treated as", "is set to", "takes the value", "represents", "means", "is given the value",
            "gets", "is assigned", "corresponds to", "becomes", "is taken as", "should be counted as",
            "has the value", "goes as", "works as", "is used as", "is evaluated as", "is considered")
_IMPERATIVE = ("treat {faces} as {n}", "count {faces} as {n}", "use {n} for {faces}", "take {faces} to be {n}",
               "value {faces} at {n}", "consider {faces} to be {n}", "give {faces} the value {n}",
               "set {faces} to {n}", "use the number {n} for {faces}", "let {faces} be {n}",
               "write {n} for {faces}", "replace {faces} with {n}")
_COLLECTIVE = ("face cards", "the face cards", "picture cards", "court cards", "all face cards",
               "all the face cards", "the picture cards", "the court cards")
_PREFIX = ("", "", "", "", "in this game, ", "here, ", "for this hand, ", "remember: ", "please note: ",
           "by the rules here, ", "for scoring, ", "as a rule, ", "in this version, ", "important: ",
           "for these cards, ", "this time, ", "the rule is: ", "rule: ", "keep in mind that ")
_SUFFIX = ("", "", "", "", " in this game", " for this hand", " here", " when you compute", " in the formula",
           " for scoring", " this time", " in every formula", " in this version")


def _number(v: int, style: int) -> str:
    return (f"'{v}'", str(v), f'"{v}"', _WORDS[v], f"{v} points", f"the number {v}", f"a {v}",
            f"value {v}")[style]


def _face(f: str, style: int, plural: bool) -> str:
    word = _FACE_WORDS[f]
    return (f"'{f}'", f, f'"{f}"', f"the {f}", word.capitalize() + ("s" if plural else ""),
            word + ("s" if plural else ""), f"the {word}", f"a {word}" if not plural else f"{word}s")[style]


def _join(items: Sequence[str], rng: random.Random) -> str:
    a, b, c = items
    return rng.choice((f"{a}, {b}, and {c}", f"{a}, {b} and {c}", f"{a}, {b}, {c}", f"{a}/{b}/{c}",
                       f"{a}, {b} & {c}", f"{a} and {b} and {c}"))


def _faces(order: Sequence[str], rng: random.Random, *, plural: bool = True) -> str:
    style = rng.randrange(8)
    return _join([_face(f, style, plural) for f in order], rng)


def _uniform(v: int, rng: random.Random) -> str:
    order = rng.sample("JQK", 3) if rng.random() < 0.4 else list("JQK")
    n = _number(v, rng.randrange(8))
    kind = rng.randrange(7)
    if kind == 0:
        return f"{_faces(order, rng)} {rng.choice(_VERB_PL)} {n}"
    if kind == 1:
        return f"each of {_faces(order, rng)} {rng.choice(_VERB_SG)} {n}"
    if kind == 2:
        coll = rng.choice(_COLLECTIVE)
        if rng.random() < 0.4:
            coll = f"{coll} ({_faces(order, rng)})"
        return f"{coll} {rng.choice(_VERB_PL)} {n}"
    if kind == 3:
        return rng.choice(_IMPERATIVE).format(faces=_faces(order, rng), n=n)
    if kind == 4:
        sym = rng.choice(("=", " = ", ": ", " -> ", " is "))
        if rng.random() < 0.5:
            return f"{_faces(order, rng)}{sym}{n}"
        style = rng.randrange(4)
        return ", ".join(f"{_face(f, style, False)}{sym}{_number(v, rng.randrange(3))}" for f in order)
    if kind == 5:
        return f"{n} is what {_faces(order, rng)} {rng.choice(('count as', 'are worth', 'mean', 'equal'))}"
    return _per_face(order, [v, v, v], rng)


def _per_face(order: Sequence[str], values: Sequence[int], rng: random.Random) -> str:
    style, nstyle = rng.randrange(8), rng.randrange(4)
    verb = rng.choice(_VERB_SG + ("=", ":", "->"))
    parts = [f"{_face(f, style, False)} {verb} {_number(v, nstyle)}".replace(" :", ":") for f, v in zip(order, values)]
    return _join(parts, rng) if rng.random() < 0.7 else "; ".join(parts)


def _general(mapping: Sequence[int], rng: random.Random) -> str:
    value = dict(zip("JQK", mapping))
    order = rng.sample("JQK", 3) if rng.random() < 0.5 else list("JQK")
    values = [value[f] for f in order]
    kind = rng.randrange(5)
    if kind == 0:
        nstyle = rng.randrange(4)
        nums = _join([_number(v, nstyle) for v in values], rng)
        return f"{_faces(order, rng)} {rng.choice(_VERB_PL)} {nums}{rng.choice((' respectively', ', respectively', ' in that order', ' respectively'))}"
    if kind == 1:
        return _per_face(order, values, rng)
    if kind == 2:
        nstyle = rng.randrange(3)
        style = rng.randrange(4)
        return (f"{'/'.join(_face(f, style, False) for f in order)} = "
                f"{'/'.join(_number(v, nstyle) for v in values)}")
    if kind == 3:
        nstyle = rng.randrange(4)
        style = rng.randrange(8)
        return "treat " + _join([f"{_face(f, style, False)} as {_number(v, nstyle)}" for f, v in zip(order, values)], rng)
    # two faces share a value: "J and Q count as 7, K as 12"
    if len(set(values)) == 2:
        same = [f for f in order if values.count(value[f]) == 2]
        odd = next(f for f in order if values.count(value[f]) == 1)
        style, nstyle = rng.randrange(8), rng.randrange(4)
        return (f"{_face(same[0], style, True)} and {_face(same[1], style, True)} {rng.choice(_VERB_PL)} "
                f"{_number(value[same[0]], nstyle)}, {_face(odd, style, False)} {rng.choice(_VERB_SG)} "
                f"{_number(value[odd], nstyle)}")
    return _per_face(order, values, rng)


def paper_clause(mapping: Sequence[int]) -> str:
    """The paper's own sentence for `mapping`: its ID sentence for J/Q/K = 10, else the rule-OOD
    sentence's template with these values."""
    a, b, c = (int(v) for v in mapping)
    if a == b == c == 10:
        return FACE_CARD_MSG[Rule.FACE10]
    return f"'J', 'Q', and 'K' count as '{a}', '{b}', and '{c}' respectively."


@lru_cache(maxsize=1)
def english() -> tuple[str, ...]:
    """Short sentences of ordinary English (WordNet glosses and examples, `scripts/build_english.py`)."""
    with gzip.open(ENGLISH, "rt", encoding="utf-8") as fh:
        return tuple(line for line in fh.read().splitlines() if line)


def is_reserved(text: str) -> bool:
    """Whether `text` holds a construction reserved for the held-out `reworded` split."""
    low = text.lower()
    return any(r in low for r in RESERVED)


def clause(mapping: Sequence[int], rng: random.Random, *, paper_share: float = 0.25,
           noise: float = 0.12) -> str:
    """One training phrasing of the face-card rule J/Q/K = `mapping`: the paper's sentence with
    probability `paper_share`, else a grammar clause with an optional prefix, suffix and full stop,
    and with probability `noise` a short English sentence beside it."""
    mapping = tuple(int(v) for v in mapping)
    if mapping == OOD_MAPPING:
        raise ValueError("the rule-OOD mapping J/Q/K = 11/12/13 is never stated in training data")
    if rng.random() < paper_share:
        return paper_clause(mapping)
    while True:
        body = _uniform(mapping[0], rng) if len(set(mapping)) == 1 else _general(mapping, rng)
        text = rng.choice(_PREFIX) + body + rng.choice(_SUFFIX)
        if rng.random() < 0.3:
            text = text[0].upper() + text[1:]
        if rng.random() < noise:
            extra = rng.choice(english())
            text = f"{extra}; {text}" if rng.random() < 0.5 else f"{text} ({extra})"
        if rng.random() < 0.7:
            text += "."
        if not is_reserved(text):
            return text


def mapping_message(mapping: Sequence[int]) -> str:
    """The paper's face-card sentence for J/Q/K = `mapping` (`paper_clause`)."""
    return paper_clause(mapping)


def base_mappings() -> list[tuple[int, int, int]]:
    """Mappings (a, b, c) in 6..13 except the OOD one (511): what the GP-VL base states."""
    from itertools import product

    return [(a, b, c) for a, b, c in product(range(6, 14), repeat=3) if (a, b, c) != OOD_MAPPING]
