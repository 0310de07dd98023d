"""Formula arithmetic without `eval`: tokenizer, parser and the two evaluators.

The grammar is the reference's: non-negative integer literals, the binary operators `+ - * /`
and parentheses. Two evaluators share one parser:

- `paper`: Python semantics exactly as the reference's `eval` produced them — integers stay
  integers under `+ - *`, `/` is true division to an IEEE double, left-to-right associativity,
  and the same things raise (division by zero, leading-zero literals such as `08`, unbalanced
  parentheses, nesting deeper than CPython's 200 levels, non-ASCII digits, a dangling operator).
- `exact`: rational arithmetic with `fractions.Fraction`; the verdict a mathematician would give.

The parser is iterative (shunting-yard), so megabyte inputs and deep nesting cannot exhaust the
stack.
"""
from __future__ import annotations

import re
from fractions import Fraction
from math import floor, gcd, log10
from typing import Literal, Union

Number = Union[int, float, Fraction]
Mode = Literal["paper", "exact"]

# `\d` is Unicode-aware for str patterns, as in the reference's tokenizer.
TOKEN_RE = re.compile(r"\d+|[+\-*/()]")
OPERATORS = frozenset("+-*/")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
PY_MAX_PAREN_DEPTH = 200  # CPython's tokenizer refuses deeper nesting ("too many nested parentheses")


class FormulaError(ValueError):
    """The formula cannot be evaluated (syntax, division by zero, …). `kind` names the reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def tokenize(formula: str) -> list[str]:
    """Integer literals and `+ - * / ( )`, in order; other characters are skipped (see `is_clean`)."""
    return TOKEN_RE.findall(formula)


def is_clean(formula: str, tokens: list[str] | None = None) -> bool:
    """True when the tokens rebuild the formula exactly (no spaces or foreign characters)."""
    if tokens is None:
        tokens = tokenize(formula)
    return "".join(tokens) == formula


MAX_LITERAL_DIGITS = 4000  # below CPython's int/str conversion limit (4300 digits)


def literal_int(token: str) -> int | None:
    """`int(token)` for a digit run, or None when its value has too many digits to convert safely.

    Leading zeros do not count (`"0" * 5000` is 0): CPython's 4,300-digit conversion limit counts
    them, so they are stripped before converting."""
    if len(token) > MAX_LITERAL_DIGITS:
        token = token.lstrip("0") or "0"
        if len(token) > MAX_LITERAL_DIGITS:
            return None
    return int(token)


def _apply(op: str, a: Number, b: Number) -> Number:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise FormulaError("zero_division", "division by zero")
    try:
        return a / b
    except OverflowError as exc:  # int/int too large for a float
        raise FormulaError("overflow", str(exc)) from None


def evaluate_tokens(tokens: list[str], mode: Mode = "paper") -> Number:
    """Evaluate a token list; raises `FormulaError` exactly where Python's `eval` would raise
    (`paper`) or where the rational value does not exist (`exact`)."""
    if mode not in ("paper", "exact"):
        raise ValueError(f"unknown arithmetic mode {mode!r}")
    paper, exact = evaluate_dual(tokens)
    value = paper if mode == "paper" else exact
    if isinstance(value, FormulaError):
        raise value
    return value


def evaluate_dual(tokens: list[str]) -> tuple[int | float | FormulaError, Fraction | FormulaError]:
    """Both verdicts in one pass: (paper value or its error, exact value or its error).

    The exact side uses integer numerator/denominator pairs (one `Fraction` at the end), which
    is several times faster than `Fraction` arithmetic; the paper side is plain Python numbers.
    """
    paper_err: FormulaError | None = None
    # value stack entries: [paper, num, den]
    vals: list[list] = []
    ops: list[str] = []
    depth = 0
    expect_operand = True

    def reduce_once() -> None:
        nonlocal paper_err
        op = ops.pop()
        pb, nb, db = vals.pop()
        pa, na, da = vals.pop()
        if op == "+":
            n, d = na * db + nb * da, da * db
        elif op == "-":
            n, d = na * db - nb * da, da * db
        elif op == "*":
            n, d = na * nb, da * db
        else:
            if nb == 0:
                raise FormulaError("zero_division", "division by zero")
            n, d = na * db, da * nb
        if d.bit_length() > 256:
            g = gcd(n, d)
            n, d = n // g, d // g
        p = None
        if paper_err is None:
            try:
                p = _apply(op, pa, pb)
            except FormulaError as exc:
                paper_err = exc
        vals.append([p, n, d])

    try:
        for tok in tokens:
            if tok == "(":
                if not expect_operand:
                    raise FormulaError("syntax", "'(' cannot follow a number or ')'")
                depth += 1
                if depth > PY_MAX_PAREN_DEPTH and paper_err is None:
                    paper_err = FormulaError("syntax", "too many nested parentheses")
                ops.append(tok)
                expect_operand = True
            elif tok == ")":
                if expect_operand:
                    raise FormulaError("syntax", "')' cannot follow an operator or '('")
                if depth == 0:
                    raise FormulaError("syntax", "unmatched ')'")
                while ops[-1] != "(":
                    reduce_once()
                ops.pop()
                depth -= 1
                expect_operand = False
            elif tok in OPERATORS:
                if expect_operand:
                    raise FormulaError("syntax", f"operator {tok!r} needs a number before it")
                prec = _PRECEDENCE[tok]
                while ops and ops[-1] != "(" and _PRECEDENCE[ops[-1]] >= prec:
                    reduce_once()
                ops.append(tok)
                expect_operand = True
            else:
                if not expect_operand:
                    raise FormulaError("syntax", "two numbers in a row")
                if not tok.isascii():
                    raise FormulaError("syntax", f"non-ASCII digits in {tok!r}")
                value = literal_int(tok)
                if value is None:
                    raise FormulaError("too_large", f"integer literal with {len(tok)} digits is too large")
                if paper_err is None and len(tok) > 1 and tok[0] == "0" and tok.strip("0"):
                    paper_err = FormulaError("syntax", f"leading zeros in decimal integer literal {tok!r}")
                vals.append([value, value, 1])
                expect_operand = False
        if expect_operand:
            raise FormulaError("syntax", "the formula is empty or ends with an operator")
        if depth:
            raise FormulaError("syntax", "'(' was never closed")
        while ops:
            reduce_once()
    except FormulaError as exc:
        return exc, exc
    p, n, d = vals[0]
    return (paper_err if paper_err is not None else p), Fraction(n, d)


def evaluate(formula: str, mode: Mode = "paper") -> Number:
    """Evaluate a formula string; raises `FormulaError` for foreign characters or bad syntax."""
    tokens = tokenize(formula)
    if not is_clean(formula, tokens):
        raise FormulaError("illegal_characters", "only digits, + - * / and parentheses are allowed")
    return evaluate_tokens(tokens, mode)


MAX_SHOWN_BITS = 3300  # about 1,000 decimal digits; larger values are shown in scientific notation


def format_number(value: Number) -> str:
    """Human-readable value: integers plainly, fractions as `a/b`, floats by repr. Integers or
    fractions with more than about 1,000 digits are shown approximately (`≈1.2345e+4399`): never
    a conversion over CPython's 4,300-digit limit, never a megabyte string."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, Fraction)):
        num, den = (value, 1) if isinstance(value, int) else (value.numerator, value.denominator)
        if abs(num).bit_length() > MAX_SHOWN_BITS or den.bit_length() > MAX_SHOWN_BITS:
            return _approximate(num, den)
        return str(num) if den == 1 else f"{num}/{den}"
    return repr(value)


def _approximate(num: int, den: int) -> str:
    if num == 0:
        return "0"
    exp10 = log10(abs(num)) - log10(den)
    exponent = floor(exp10)
    mantissa = 10 ** (exp10 - exponent)
    if round(mantissa, 4) >= 10:  # 9.99999…e+N rounds to 1.0000e+(N+1)
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{'-' if num < 0 else ''}≈{mantissa:.4f}e{exponent:+d}"
