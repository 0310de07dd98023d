"""The GeneralPoints verifier: parse a raw model reply and grade it exactly as the reference does.

Parsing (reference `re_match` / `robust_str_to_list`):
1. `json.loads` of the whole text, then `[field]`; any failure falls back to
2. the regexes `"formula": "(.*?)"` and `"cards": \\[([^\\]]+)\\]` (first match; `"None"` when
   absent). A regex card list whose `", "`-separated items all parse as ints becomes an int list.
3. The formula is cut at its first `=`. The card value is normalised by removing `[`, `]`, single
   quotes and spaces and splitting on commas; anything but a 4-item string result becomes `[]`.

Grading (reference `step_rewards`): recognition (VL only, −1.5, returns), character whitelist
(−3, returns), token-sequence walk (−3 each, accumulates), number multiset (−2 each), then
Python-float evaluation against the target (+5, or +1 partial on an evaluation error when the
formula is a prefix of a solver solution), else the prefix walk (−1 or 0). Messages are joined
with ", " and closed by one ".".

Beyond the reference, every verdict carries an exact-arithmetic second opinion (`exact_correct`)
and flags `float_rejected` when the paper's float comparison rejects a correct answer. A
`lenient` parsing mode (opt-in) accepts the friendlier formats the reference rejects.
"""
from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any, NamedTuple

from . import arith
from .solver import reference_solutions, solution_prefixes

# Reward table (reference `REWARD_FN`).
CORRECT_SOLUTION = 5.0
PARTIAL_SOLUTION = 1.0
NO_SOLUTION = -1.0
INCORRECT_VISION = -1.5
INCORRECT_NUMBER = -2.0
ILLEGAL_FORMULA = -3.0
STEP_LIMIT = -1.0

MSG_CORRECT = "Correct solution"
MSG_PARTIAL = "partial solution"
MSG_VISION = "you recognized wrong cards"
MSG_ILLEGAL_CHARS = "illegal characters"
MSG_STEP_LIMIT = "step_limit_reached"

_FORMULA_RE = re.compile(r'"formula": "(.*?)"')
_CARDS_RE = re.compile(r'"cards": \[([^\]]+)\]')
_LENIENT_FORMULA_RE = re.compile(r"""["']?formula["']?\s*:\s*["'](.*?)["']""", re.IGNORECASE | re.DOTALL)
_LENIENT_CARDS_OPEN = re.compile(r"""cards["']?\s*:\s*\[""", re.IGNORECASE)


class Outcome(str, Enum):
    """Failure taxonomy from the paper's reward classes (plus aggregates)."""

    CORRECT = "correct"
    PARTIAL = "partial"
    WRONG_VALUE = "wrong_value"          # −1: legal formula, wrong value / no solution matches
    FLOAT_ROUNDING = "float_rounding"    # 0: every prefix matched, float rounding spoiled it
    WRONG_CARDS = "wrong_cards"          # −1.5: VL recognition failed
    WRONG_NUMBERS = "wrong_numbers"      # −2 per number fault only
    ILLEGAL_FORMULA = "illegal_formula"  # −3: illegal characters or sequence violations
    AGGREGATED = "aggregated_error"      # several penalty kinds summed (−5, −6 …)
    STEP_LIMIT = "step_limit"            # −1 on the call after the budget ran out


class Parsed(NamedTuple):
    """What the reference parser extracted from a reply."""

    formula: Any          # str normally; the raw JSON value when it was not a string
    cards: list           # normalised card labels ([] when unusable)
    raw_formula: Any      # before cutting at "="
    raw_cards: Any        # the matched cards value before normalisation
    source: str           # "json", "regex", "lenient" or "none"


@dataclass
class Verdict:
    """One graded reply: the paper's reward and message plus our exact second opinion."""

    reward: float
    verify_info: str
    terminated: bool
    outcome: Outcome
    formula: Any
    cards: list
    numbers_used: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    paper_value: float | int | None = None   # Python-float value of the formula (None: raised)
    exact_value: str | None = None           # rational value, "a/b" (None: not evaluable)
    exact_correct: bool = False               # legal, right cards/numbers and exactly == target
    float_rejected: bool = False              # exact_correct but the paper's float check failed
    reference_exception: str | None = None    # the reference raised here; we graded it as illegal
    parse_source: str = "regex"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        return out


# --------------------------------------------------------------------------- parsing
_NO_JSON = object()


def _json_doc(text: str) -> Any:
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001 — the reference falls back to its regexes on any failure
        return _NO_JSON


def _json_field(doc: Any, name: str) -> tuple[bool, Any]:
    """The reference's `json.loads(text)[name]`, with the parse done once per reply."""
    if doc is _NO_JSON:
        return False, None
    try:
        return True, doc[name]
    except Exception:  # noqa: BLE001
        return False, None


_CARDS_OPEN = '"cards": ['


def cards_search(text: str) -> str | None:
    """`_CARDS_RE.search(text).group(1)` (or None) in linear time: the regex backtracks over every
    `"cards": [` without a closing `]` (quadratic: 0.1 s for a 16 KB reply, seconds for 40 KB)."""
    start = text.find(_CARDS_OPEN)
    while start != -1:
        body = start + len(_CARDS_OPEN)
        close = text.find("]", body)
        if close == -1:
            return None  # no later opening can be closed either
        if close > body:
            return text[body:close]
        start = text.find(_CARDS_OPEN, start + 1)
    return None


def lenient_cards_search(text: str) -> str | None:
    """What `["']?cards["']?\\s*:\\s*\\[([^\\]]*)\\]` (case-insensitive) would capture, in linear time.
    That regex rescans the rest of the text from every opening without a closing `]` (quadratic:
    ~1 s for `"cards": [` repeated 1,638 times). Each opening's `[` comes after the previous one's,
    so when the first opening has no `]` after it, none has: only the first needs looking at."""
    m = _LENIENT_CARDS_OPEN.search(text)
    if m is None:
        return None
    close = text.find("]", m.end())
    return None if close == -1 else text[m.end():close]


def _regex_cards(match: str) -> Any:
    """A regex-matched card list: an int list when every `", "` item is an int, else a string."""
    if "'" in match or '"' in match:  # quoted items never parse as ints (fast path, same result)
        return "[" + match + "]"
    try:
        return [int(item) for item in match.split(", ")]
    except ValueError:
        return "[" + match + "]"


def normalize_cards(value: Any) -> list[str]:
    """The reference's `robust_str_to_list`: strip `[ ] '` and spaces, split on commas, need 4."""
    if not isinstance(value, str):
        return []
    cleaned = value.replace("[", "").replace("]", "").replace("'", "").replace(" ", "")
    items = cleaned.split(",")
    return items if len(items) == 4 else []


def cut_formula(formula: Any) -> Any:
    """Everything from the first `=` on is discarded (non-strings pass through unchanged)."""
    if isinstance(formula, str):
        return formula.split("=", 1)[0]
    return formula


def parse_reply(text: str, *, lenient: bool = False) -> Parsed:
    """Extract formula and cards from a raw reply (reference semantics unless `lenient`)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    doc = _json_doc(text)
    ok, raw_formula = _json_field(doc, "formula")
    source = "json" if ok else "regex"
    if not ok:
        m = _FORMULA_RE.search(text)
        raw_formula = m.group(1) if m else "None"
        if m is None:
            source = "none"
    ok_cards, raw_cards = _json_field(doc, "cards")
    if not ok_cards:
        match = cards_search(text)
        raw_cards = _regex_cards(match) if match is not None else "None"
    if lenient:
        raw_formula, raw_cards, source = _lenient(text, raw_formula, raw_cards, source)
    return Parsed(cut_formula(raw_formula), normalize_cards(raw_cards), raw_formula, raw_cards, source)


def _lenient(text: str, raw_formula: Any, raw_cards: Any, source: str):
    """Opt-in friendlier parsing: single quotes, any spacing, JSON lists, stray spaces."""
    if not isinstance(raw_formula, str) or raw_formula == "None":
        m = _LENIENT_FORMULA_RE.search(text)
        if m:
            raw_formula, source = m.group(1), "lenient"
    if isinstance(raw_formula, str):
        raw_formula = re.sub(r"\s+", "", raw_formula).replace("×", "*").replace("÷", "/")
    if isinstance(raw_cards, list):
        raw_cards = ", ".join(str(c) for c in raw_cards)
    if not isinstance(raw_cards, str) or raw_cards == "None":
        found = lenient_cards_search(text)
        if found is not None:
            raw_cards = found
    if isinstance(raw_cards, str):
        raw_cards = raw_cards.replace('"', "").replace("\n", "").replace("\t", "")
    return raw_formula, raw_cards, source


# --------------------------------------------------------------------------- grading
def _fmt_list(values: list) -> str:
    return "[" + ", ".join(_fmt_num(v) for v in values) + "]"


def _fmt_num(value) -> str:
    return str(value)


def _literal_value(token: str):
    value = arith.literal_int(token)
    return value if value is not None else token[:12] + "…"


def sequence_violations(tokens: list[str]) -> list[str]:
    """The reference's token-sequence walk: one message per violation, in order."""
    messages = []
    prev: str | None = None
    depth = 0
    for tok in tokens:
        if tok == "(":
            if prev is None or prev in arith.OPERATORS or prev == "(":
                depth += 1
            else:  # a rejected "(" is not counted as open
                messages.append("invalid sequence before '('")
        elif tok == ")":
            if prev is not None and (prev == ")" or _is_number(prev)):
                if depth > 0:
                    depth -= 1
                else:
                    messages.append("unmatched closing parenthesis")
            else:
                messages.append("invalid sequence after ')'")
        elif tok in arith.OPERATORS:
            if not (prev is not None and (prev == ")" or _is_number(prev))):
                messages.append("invalid sequence after operator")
        else:
            if not (prev is None or prev in arith.OPERATORS or prev == "("):
                messages.append("invalid sequence after number")
        prev = tok
    return messages


def _is_number(tok: str) -> bool:
    return tok not in arith.OPERATORS and tok not in "()"


def number_faults(used: list, numbers: list[int]) -> list[str]:
    """The reference's number multiset check (invalid / too many / unused), −2 each."""
    if len(used) == len(numbers) and sorted(used, key=_sort_key) == sorted(numbers):
        return []
    messages = []
    allowed = set(numbers)
    invalid = _distinct([u for u in used if u not in allowed])
    if invalid:
        messages.append(f"you used invalid numbers: {_fmt_list(invalid)}")
    else:
        have = Counter(numbers)
        counts = Counter(used)
        over = _distinct([u for u in used if counts[u] > have[u]])
        if over:
            messages.append(f"you used numbers: {_fmt_list(over)} too many times")
    counts = Counter(used)
    have = Counter(numbers)
    under = _distinct([n for n in numbers if counts[n] < have[n]])
    if under:
        messages.append(f"you didn't use numbers: {_fmt_list(under)}")
    return messages


def _sort_key(value) -> tuple:
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def _distinct(values: list) -> list:
    seen, out = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _join(messages: list[str]) -> str:
    return ", ".join(messages) + "."


def verify(
    reply: str,
    numbers: list[int],
    plain_cards: list[str] | None = None,
    *,
    target: int = 24,
    language_only: bool = True,
    lenient: bool = False,
) -> Verdict:
    """Grade one raw reply against a hand (rule-mapped `numbers`, Plain-Card labels for VL)."""
    parsed = parse_reply(reply, lenient=lenient)
    formula = parsed.formula
    base = dict(formula=formula, cards=parsed.cards, parse_source=parsed.source)

    if not language_only:
        truth = sorted(plain_cards or [])
        if sorted(parsed.cards) != truth:
            exact = _exact_opinion(formula, numbers, target)
            return Verdict(INCORRECT_VISION, MSG_VISION, False, Outcome.WRONG_CARDS,
                           messages=[MSG_VISION], **exact, **base)

    if not isinstance(formula, str):
        # The reference raises TypeError here (a JSON formula that is a number, null or list).
        return Verdict(ILLEGAL_FORMULA, _join([MSG_ILLEGAL_CHARS]), False, Outcome.ILLEGAL_FORMULA,
                       messages=[MSG_ILLEGAL_CHARS],
                       reference_exception=f"TypeError: formula is {type(formula).__name__}", **base)

    if len(formula) <= _CACHE_MAX_FORMULA:
        graded = _grade_cached(formula, tuple(numbers), target)
    else:
        graded = _grade(formula, tuple(numbers), target)
    verdict = copy.copy(graded)  # the cached template is shared: give the caller its own lists
    verdict.messages = list(graded.messages)
    verdict.numbers_used = list(graded.numbers_used)
    verdict.cards = parsed.cards
    verdict.parse_source = parsed.source
    return verdict


_CACHE_MAX_FORMULA = 256


def _grade(formula: str, numbers: tuple[int, ...], target: int) -> Verdict:
    """Grade a formula string (everything after parsing). Pure: cached for short formulas."""
    base: dict[str, Any] = dict(formula=formula, cards=[], parse_source="")
    tokens = arith.tokenize(formula)
    if not arith.is_clean(formula, tokens):
        return Verdict(ILLEGAL_FORMULA, _join([MSG_ILLEGAL_CHARS]), False, Outcome.ILLEGAL_FORMULA,
                       messages=[MSG_ILLEGAL_CHARS], **base)

    seq = sequence_violations(tokens)
    used = [_literal_value(t) for t in tokens if _is_number(t)]
    nums = number_faults(used, list(numbers))
    messages = seq + nums
    if messages:
        reward = ILLEGAL_FORMULA * len(seq) + INCORRECT_NUMBER * len(nums)
        outcome = (Outcome.ILLEGAL_FORMULA if not nums else Outcome.WRONG_NUMBERS if not seq
                   else Outcome.AGGREGATED)
        exact = _exact_from_tokens(tokens, False, target) if not seq and len(used) <= 16 else {}
        return Verdict(reward, _join(messages), False, outcome, numbers_used=_ints(used),
                       messages=messages, **exact, **base)

    paper, exact_value = arith.evaluate_dual(tokens)
    exact = _exact_fields(exact_value, True, target)
    prefixes = solution_prefixes(numbers, target)
    value = None
    if isinstance(paper, arith.FormulaError):
        if formula in prefixes:
            return Verdict(PARTIAL_SOLUTION, _join([MSG_PARTIAL]), False, Outcome.PARTIAL,
                           numbers_used=used, messages=[MSG_PARTIAL], **exact, **base)
    else:
        value = paper
        if value == target:  # exact IEEE equality, no tolerance (the reference's comparison)
            return Verdict(CORRECT_SOLUTION, _join([MSG_CORRECT]), True, Outcome.CORRECT,
                           numbers_used=used, messages=[MSG_CORRECT], paper_value=value,
                           **exact, **base)
        exact["float_rejected"] = exact["exact_correct"]  # right answer, spoiled by float rounding

    prefix = ""
    for i, tok in enumerate(tokens):
        candidate = prefix + tok
        if candidate not in prefixes:
            msg = ("your formula does not match any solution" if i == 0 else
                   f"{prefix} is partially correct but the full formula does not match any solution")
            return Verdict(NO_SOLUTION, _join([msg]), False, Outcome.WRONG_VALUE,
                           numbers_used=used, messages=[msg], paper_value=value, **exact, **base)
        prefix = candidate
    return Verdict(0.0, _join([]), False, Outcome.FLOAT_ROUNDING, numbers_used=used,
                   messages=[], paper_value=value, **exact, **base)



_grade_cached = lru_cache(maxsize=65536)(_grade)


def _ints(values: list) -> list[int]:
    return [v for v in values if isinstance(v, int)]


def _exact_fields(value, numbers_ok: bool, target: int) -> dict[str, Any]:
    if isinstance(value, arith.FormulaError):
        return {"exact_value": None, "exact_correct": False, "float_rejected": False}
    return {"exact_value": arith.format_number(value), "exact_correct": numbers_ok and value == target,
            "float_rejected": False}


def _exact_from_tokens(tokens: list[str], numbers_ok: bool, target: int) -> dict[str, Any]:
    return _exact_fields(arith.evaluate_dual(tokens)[1], numbers_ok, target)


def _exact_opinion(formula: Any, numbers: list[int], target: int) -> dict:
    """Exact verdict on the formula alone (used when the paper stopped early, e.g. at recognition)."""
    if not isinstance(formula, str):
        return {}
    tokens = arith.tokenize(formula)
    if not arith.is_clean(formula, tokens) or sequence_violations(tokens):
        return {}
    used = [_literal_value(t) for t in tokens if _is_number(t)]
    if len(used) > 16:
        return {}
    return _exact_from_tokens(tokens, not number_faults(used, list(numbers)), target)


def step_limit_verdict() -> Verdict:
    """The verdict of the call after the budget ran out (the reply is ignored)."""
    return Verdict(STEP_LIMIT, MSG_STEP_LIMIT, False, Outcome.STEP_LIMIT, formula=None, cards=[],
                   parse_source="none")


def is_solution(formula: str, numbers: list[int], target: int = 24) -> bool:
    """Exact check of a clean formula: legal, uses each number once, equals the target."""
    tokens = arith.tokenize(formula)
    if not arith.is_clean(formula, tokens) or sequence_violations(tokens):
        return False
    used = [_literal_value(t) for t in tokens if _is_number(t)]
    if number_faults(used, list(numbers)):
        return False
    return arith.evaluate_dual(tokens)[1] == target


__all__ = [
    "Outcome", "Parsed", "Verdict", "parse_reply", "verify", "normalize_cards", "cut_formula",
    "sequence_violations", "number_faults", "step_limit_verdict", "is_solution", "reference_solutions",
]
