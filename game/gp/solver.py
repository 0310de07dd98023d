"""Solvers for GeneralPoints.

Two views of the same question, "which formulas over these four values hit the target":

- `reference_solutions(values, target)`: the reference environment's solution-string set — every
  distinct ordering of the values, all 64 operator triples and the 7 bracket shapes, evaluated
  exactly, written without spaces (redundant parentheses included). The verifier's +1/−1 prefix
  messages depend on this exact set. Evaluation is vectorised with numpy over integer
  numerator/denominator pairs, so the whole 1820-multiset table builds in well under a second.
- `distinct_solutions(values, target)`: a canonical solver for people — one formula per solution
  up to commutativity and associativity (`a+b` = `b+a`, `(a+b)+c` = `a+(b+c)`, `a-(b-c)` =
  `a+c-b`), written with minimal parentheses. Used for hints and "show all solutions".

Both are exact (rational) and cached per (sorted values, target).
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from itertools import combinations_with_replacement, permutations, product

import numpy as np

OPS = ("+", "-", "*", "/")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}

# The 7 bracket shapes of the reference, with a, b, c, d operands and o1..o3 operators.
SHAPES = (
    "{a}{o1}{b}{o2}{c}{o3}{d}",
    "({a}{o1}{b}){o2}{c}{o3}{d}",
    "({a}{o1}{b}{o2}{c}){o3}{d}",
    "{a}{o1}({b}{o2}{c}){o3}{d}",
    "{a}{o1}({b}{o2}{c}{o3}{d})",
    "{a}{o1}{b}{o2}({c}{o3}{d})",
    "({a}{o1}{b}){o2}({c}{o3}{d})",
)


# --------------------------------------------------------------------------- reference solver
def _op(op: str, x: tuple[np.ndarray, np.ndarray], y: tuple[np.ndarray, np.ndarray]):
    """Exact rational op on (numerator, denominator) arrays; (0, 0) marks an invalid value."""
    n1, d1 = x
    n2, d2 = y
    if op == "+":
        return n1 * d2 + n2 * d1, d1 * d2
    if op == "-":
        return n1 * d2 - n2 * d1, d1 * d2
    if op == "*":
        return n1 * n2, d1 * d2
    den = d1 * n2  # division: zero when dividing by zero or by an invalid value
    num = np.where(den == 0, 0, n1 * d2)
    return num, den


def _flat(operands, ops):
    """Evaluate `x0 o0 x1 o1 x2 …` with Python precedence and left associativity."""
    vals = [operands[0]]
    pending: list[str] = []
    for op, operand in zip(ops, operands[1:]):
        while pending and _PREC[pending[-1]] >= _PREC[op]:
            y = vals.pop()
            vals.append(_op(pending.pop(), vals.pop(), y))
        pending.append(op)
        vals.append(operand)
    while pending:
        y = vals.pop()
        vals.append(_op(pending.pop(), vals.pop(), y))
    return vals[0]


def _shape_value(shape: int, a, b, c, d, o1: str, o2: str, o3: str):
    if shape == 0:
        return _flat([a, b, c, d], [o1, o2, o3])
    if shape == 1:
        return _flat([_op(o1, a, b), c, d], [o2, o3])
    if shape == 2:
        return _op(o3, _flat([a, b, c], [o1, o2]), d)
    if shape == 3:
        return _flat([a, _op(o2, b, c), d], [o1, o3])
    if shape == 4:
        return _op(o1, a, _flat([b, c, d], [o2, o3]))
    if shape == 5:
        return _flat([a, b, _op(o3, c, d)], [o1, o2])
    return _op(o2, _op(o1, a, b), _op(o3, c, d))


def _solve_tuples(tuples: np.ndarray, target: int) -> dict[tuple[int, ...], list[str]]:
    """Reference solution strings for each ordered 4-tuple row of `tuples`, keyed by sorted values."""
    one = np.ones(len(tuples), dtype=np.int64)
    a, b, c, d = [(tuples[:, i].astype(np.int64), one) for i in range(4)]
    found: dict[tuple[int, ...], set[str]] = {}
    for o1, o2, o3 in product(OPS, repeat=3):
        for shape in range(7):
            num, den = _shape_value(shape, a, b, c, d, o1, o2, o3)
            hit = np.nonzero((den != 0) & (num == target * den))[0]
            if not len(hit):
                continue
            template = SHAPES[shape]
            for row in tuples[hit].tolist():
                text = template.format(a=row[0], b=row[1], c=row[2], d=row[3], o1=o1, o2=o2, o3=o3)
                found.setdefault(tuple(sorted(row)), set()).add(text)
    return {key: sorted(strings) for key, strings in found.items()}


def _check_target(target: int) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target <= 0:
        raise ValueError(f"target must be a positive integer, got {target!r}")
    return int(target)


@lru_cache(maxsize=4096)
def _reference_cached(key: tuple[int, ...], target: int) -> tuple[str, ...]:
    perms = np.array(sorted(set(permutations(key))), dtype=np.int64)
    return tuple(_solve_tuples(perms, target).get(key, []))


def reference_solutions(values, target: int = 24) -> tuple[str, ...]:
    """The reference's solution strings for these values (sorted, de-duplicated)."""
    key = tuple(sorted(int(v) for v in values))
    if len(key) != 4:
        raise ValueError(f"GeneralPoints uses exactly 4 values, got {len(key)}")
    return _reference_cached(key, _check_target(target))


@lru_cache(maxsize=64)
def solution_table(target: int = 24, max_value: int = 13) -> dict[tuple[int, ...], tuple[str, ...]]:
    """Reference solutions for every multiset of 4 values in 1..max_value (one vectorised pass)."""
    target = _check_target(target)
    tuples = np.array(list(product(range(1, max_value + 1), repeat=4)), dtype=np.int64)
    solved = _solve_tuples(tuples, target)
    table: dict[tuple[int, ...], tuple[str, ...]] = {}
    for key in combinations_with_replacement(range(1, max_value + 1), 4):
        table[key] = tuple(solved.get(key, ()))
    return table


@lru_cache(maxsize=4096)
def _prefixes(key: tuple[int, ...], target: int) -> frozenset[str]:
    out: set[str] = set()
    for sol in _reference_cached(key, target):
        out.update(sol[:i] for i in range(1, len(sol) + 1))
    return frozenset(out)


def solution_prefixes(values, target: int = 24) -> frozenset[str]:
    """Every non-empty string prefix of every reference solution (for O(1) prefix checks)."""
    return _prefixes(tuple(sorted(int(v) for v in values)), _check_target(target))


def is_solvable(values, target: int = 24) -> bool:
    return bool(reference_solutions(values, target))


# --------------------------------------------------------------------------- canonical solver
# An expression is (value, text, precedence, canonical key). Keys normalise + and * as
# multisets of signed terms / signed factors, so commutative or associative rewrites collide.
# A key is (kind, parts, signature): the signature is a canonical string of the whole key (equal
# keys, equal signatures), computed once when the key is built; parts are kept in signature order.

def _sum_parts(key):
    return key[1] if key[0] == "sum" else ((1, key),)


def _prod_parts(key):
    return key[1] if key[0] == "prod" else ((1, key),)


def _leaf_key(v: int):
    return ("num", v, str(v))


def _combine_key(op: str, kx, ky):
    if op in "+-":
        kind, sign, split = "sum", (1 if op == "+" else -1), _sum_parts
    else:
        kind, sign, split = "prod", (1 if op == "*" else -1), _prod_parts
    signed = [((s, t), ("+" if s > 0 else "-") + t[2]) for s, t in split(kx)]
    signed += [((sign * s, t), ("+" if sign * s > 0 else "-") + t[2]) for s, t in split(ky)]
    signed.sort(key=lambda p: p[1])
    return (kind, tuple(p[0] for p in signed), f"{kind}({','.join(p[1] for p in signed)})")


def _wrap(text: str, prec: int, need: int, right: bool, op: str) -> str:
    """Parenthesise an operand only where Python precedence/associativity requires it."""
    if prec < need or (right and prec == need and op in "-/"):
        return f"({text})"
    return text


def _combine(op: str, x, y):
    vx, tx, px, kx = x
    vy, ty, py, ky = y
    if op == "/" and vy == 0:
        return None
    # only the operation asked for (Fraction arithmetic dominates the search's time)
    value = vx + vy if op == "+" else vx - vy if op == "-" else vx * vy if op == "*" else vx / vy
    prec = _PREC[op]
    text = _wrap(tx, px, prec, False, op) + op + _wrap(ty, py, prec, True, op)
    return value, text, prec, _combine_key(op, kx, ky)


def _search(items, target: Fraction, out: dict, seen: set) -> None:
    state = tuple(sorted(item[3][2] for item in items))
    if state in seen:  # the same sub-expressions were reached by another order
        return
    seen.add(state)
    if len(items) == 1:
        value, text, _, key = items[0]
        if value == target and key not in out:
            out[key] = text
        return
    n = len(items)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            rest = [items[k] for k in range(n) if k not in (i, j)]
            for op in OPS:
                if op in "+*" and j < i:  # commutative: one order is enough
                    continue
                combined = _combine(op, items[i], items[j])
                if combined is not None:
                    _search(rest + [combined], target, out, seen)


def _format_key(key) -> tuple[Fraction, str, int]:
    """Render a canonical key as (value, text, precedence): larger terms first, subtractions
    and divisions last, parentheses only where needed — e.g. `10+10+5-1`, `6*4/(2-1)`."""
    if key[0] == "num":
        return Fraction(key[1]), str(key[1]), 3
    parts = [(sign, _format_key(sub)) for sign, sub in key[1]]
    pos = sorted((p for s, p in parts if s > 0), key=lambda p: (-p[0], p[1]))
    neg = sorted((p for s, p in parts if s < 0), key=lambda p: (-p[0], p[1]))
    if key[0] == "sum":
        value = sum((p[0] for p in pos), Fraction(0)) - sum((p[0] for p in neg), Fraction(0))
        text = "+".join(p[1] for p in pos) + "".join("-" + _wrap(p[1], p[2], 1, True, "-") for p in neg)
        return value, text, 1
    value = Fraction(1)
    for p in pos:
        value *= p[0]
    for p in neg:
        value /= p[0]
    text = "*".join(_wrap(p[1], p[2], 2, False, "*") for p in pos)
    text += "".join("/" + _wrap(p[1], p[2], 2, True, "/") for p in neg)
    return value, text, 2


@lru_cache(maxsize=4096)
def _distinct_cached(key: tuple[int, ...], target: int) -> tuple[str, ...]:
    leaves = [(Fraction(v), str(v), 3, _leaf_key(v)) for v in key]
    out: dict = {}
    _search(leaves, Fraction(target), out, set())
    texts = {_format_key(k)[1] for k in out}
    return tuple(sorted(texts, key=lambda s: (len(s), s)))


def distinct_solutions(values, target: int = 24) -> tuple[str, ...]:
    """One formula per distinct solution (up to commutativity/associativity), shortest first."""
    key = tuple(sorted(int(v) for v in values))
    return _distinct_cached(key, _check_target(target))
