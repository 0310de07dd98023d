"""The GP corpora of the staged pipeline: base, Init/SFT (`id`) and SFT-diverse examples.

Every example is an `Example` (`models.train.data`): the prompt, the expert answer, and for a
*revision* example the failed tries before it — each wrong reply with the verifier's exact
feedback (`game.gp.verifier.verify`, shown as `You failed this trial because …` by `gp_chat`,
exactly the chat an episode builds). The loss is on the final answer only.

- `base_examples` (the stand-in for pretraining): hands of four ranks, i.i.d. in 1..13 (a face card
  forced into `face_prob` of them), whose rule line states a face-card mapping J/Q/K = (a, b, c) in
  a phrasing from the training grammar (`models.train.rules_text`): J/Q/K = 10 in `id_share` of
  them (often in the paper's own sentence), other uniform values, and general mappings in 1..13 —
  never 11/12/13 together. A share `revision` of the examples are revisions.
- `id_examples` (Init and SFT): hands from the registry's ID dealing (`Dealer`), the paper's frozen
  ID prompt, the canonical expert formula; Init also gets revisions, SFT none (the paper's SFT data
  are single-turn).
- `diverse_examples` (SFT-diverse): half `id_examples`, half stated mappings in varied phrasings
  (single-turn), interleaved, never the rule-OOD mapping.

No stream deals a held-out evaluation hand (`game.tasks.gp.is_evaluation_hand`: the card multisets
of the first 500 hands of every GP split), and none states a `reworded` phrasing (tests).

Wrong tries imitate what a model gets wrong: `arith` (the right numbers, a formula that misses
the target), `mapping` (a face card read with another value — often 10 — and solved for the misread
numbers: the verifier answers "you used invalid numbers: …, you didn't use numbers: …"), `numbers`
(a number dropped or doubled) and `illegal` (a malformed formula).
"""
from __future__ import annotations

import random
from typing import Sequence

from game.gp.cards import Rule
from game.gp.deal import DealConfig, Dealer
from game.gp.verifier import verify
from game.prompts import gp_prompt, response_eqn
from game.tasks.gp import is_evaluation_hand

from .data import Example, expert_formula
from .rules_text import OOD_MAPPING, clause

_RANK_LABEL = {1: "A", 11: "J", 12: "Q", 13: "K"}
ID_MAPPING = (10, 10, 10)
TRY_COUNTS = (1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4)   # failed tries before the answer (a try-5 budget)


def stated_prompt(labels: Sequence[str], rule_text: str, target: int = 24) -> str:
    """The paper's GP-L prompt with the face-card rule stated as `rule_text` (both places)."""
    return gp_prompt(labels, Rule.FACE10, target, rule_text=rule_text)


def _labels(ranks: Sequence[int]) -> list[str]:
    return [_RANK_LABEL.get(r, str(r)) for r in ranks]


_SHAPES = ("({a}{o}{b}){p}({c}{q}{d})", "(({a}{o}{b}){p}{c}){q}{d}", "{a}{o}({b}{p}({c}{q}{d}))",
           "({a}{o}({b}{p}{c})){q}{d}", "{a}{o}{b}{p}{c}{q}{d}", "({a}{o}{b}{p}{c}){q}{d}", "{a}{o}({b}{p}{c}{q}{d})")


def random_formula(values: Sequence[int], rng: random.Random) -> str:
    """A random arithmetic expression using each of `values` once (any shape, any operators)."""
    a, b, c, d = rng.sample(list(values), len(values))
    o, p, q = (rng.choice("+-*/") for _ in range(3))
    return rng.choice(_SHAPES).format(a=a, b=b, c=c, d=d, o=o, p=p, q=q)


def _wrong_try(kind: str, labels: list[str], values: list[int], mapping: Sequence[int], target: int,
               rng: random.Random) -> str | None:
    """One wrong reply of `kind`, or None when this hand cannot produce that mistake."""
    if kind == "arith":
        return response_eqn(labels, values, random_formula(values, rng), target)
    if kind == "mapping":
        faces = [i for i, lab in enumerate(labels) if lab in "JQK"]
        if not faces:
            return None
        misread = list(values)
        for i in faces:
            if rng.random() < 0.6 or len(faces) == 1:
                choices = [v for v in (10, *mapping, rng.randint(1, 13)) if v != values[i]]
                if choices:
                    misread[i] = rng.choice(choices)
        if misread == values:
            return None
        formula = expert_formula(misread, target) if rng.random() < 0.7 else None
        return response_eqn(labels, misread, formula or random_formula(misread, rng), target)
    if kind == "numbers":
        used = list(values)
        if rng.random() < 0.5:
            used.pop(rng.randrange(4))
        else:
            used[rng.randrange(4)] = used[rng.randrange(4)]
        a, *rest = rng.sample(used, len(used))
        formula = str(a) + "".join(rng.choice("+-*/") + str(x) for x in rest)
        return response_eqn(labels, values, formula, target)
    good = expert_formula(values, target) or random_formula(values, rng)
    cut = rng.randrange(1, len(good))
    broken = rng.choice((good[:cut], good[:cut] + ")" + good[cut:], good.replace("*", "x", 1), good + "+"))
    return response_eqn(labels, values, broken, target)


def revision_history(labels: list[str], values: list[int], mapping: Sequence[int], target: int,
                     rng: random.Random, *, kinds: Sequence[str] = ("arith", "arith", "arith", "mapping", "mapping",
                                                                   "numbers", "illegal")) -> tuple:
    """1–4 distinct wrong tries, each with the verifier's feedback: ((reply, verify_info), …)."""
    tries: list[tuple[str, str]] = []
    want = rng.choice(TRY_COUNTS)
    for _ in range(want * 8):
        if len(tries) == want:
            break
        reply = _wrong_try(rng.choice(kinds), labels, values, mapping, target, rng)
        if reply is None or any(reply == r for r, _ in tries):
            continue
        verdict = verify(reply, values, target=target)
        if verdict.terminated:       # a random formula that happens to be right: not a wrong try
            continue
        tries.append((reply, verdict.verify_info))
    return tuple(tries)


def draw_mapping(rng: random.Random, id_share: float) -> tuple[int, int, int]:
    """J/Q/K = 10 with probability `id_share`; else another uniform value (a quarter) or a general
    mapping in 1..13; never the rule-OOD mapping."""
    if rng.random() < id_share:
        return ID_MAPPING
    while True:
        if rng.random() < 0.25:
            v = rng.randint(1, 13)
            mapping = (v, v, v)
        else:
            mapping = (rng.randint(1, 13), rng.randint(1, 13), rng.randint(1, 13))
        if mapping != OOD_MAPPING:
            return mapping


def base_examples(n: int, seed: int, *, face_prob: float = 0.6, id_share: float = 0.25, revision: float = 0.35,
                  paper_share: float = 0.3, target: int = 24) -> list[Example]:
    """`n` base examples (see the module doc): stated mappings in many phrasings, revisions."""
    rng = random.Random(f"gp-base:{seed}")
    out: list[Example] = []
    while len(out) < n:
        mapping = draw_mapping(rng, id_share)
        ranks = [rng.randint(1, 13) for _ in range(4)]
        if rng.random() < face_prob and max(ranks) <= 10:
            ranks[rng.randrange(4)] = rng.randint(11, 13)
        labels = _labels(ranks)
        if is_evaluation_hand(labels):
            continue
        values = [r if r <= 10 else mapping[r - 11] for r in ranks]
        formula = expert_formula(values, target)
        if formula is None:
            continue
        prompt = stated_prompt(labels, clause(mapping, rng, paper_share=paper_share), target)
        history = revision_history(labels, values, mapping, target, rng) if rng.random() < revision else ()
        out.append(Example(prompt, response_eqn(labels, values, formula, target), history))
    return out


def id_examples(n: int, seed: int, *, revision: float = 0.0, target: int = 24) -> list[Example]:
    """`n` in-distribution examples: the registry's ID dealing (held-out hands skipped), the frozen
    ID prompt, the expert answer; a share `revision` of them after failed tries."""
    rng = random.Random(f"gp-id:{seed}")
    dealer = Dealer(seed, DealConfig(rule=Rule.FACE10, target=target))
    out: list[Example] = []
    while len(out) < n:
        deal = dealer.next()
        if is_evaluation_hand(deal.labels):
            continue
        values = deal.numbers(Rule.FACE10)
        formula = expert_formula(values, target)
        if formula is None:
            continue
        history = revision_history(deal.labels, values, ID_MAPPING, target, rng) if rng.random() < revision else ()
        out.append(Example(gp_prompt(deal.labels, Rule.FACE10, target), response_eqn(deal.labels, values, formula, target),
                           history))
    return out


def diverse_examples(n: int, seed: int, *, face_prob: float = 0.6) -> list[Example]:
    """SFT-diverse: ID examples and stated-mapping examples (varied phrasings, no revisions),
    alternating, half each."""
    ids = id_examples(n - n // 2, seed)
    varied = base_examples(n // 2, seed + 1, face_prob=face_prob, id_share=0.0, revision=0.0, paper_share=0.3)
    return [x for pair in zip(ids, varied) for x in pair] + ids[len(varied):]
