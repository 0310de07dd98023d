"""Property tests (hypothesis): the verifier is total and safe; evaluators agree when they must."""
from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from game.gp import arith
from game.gp.solver import distinct_solutions
from game.gp.verifier import is_solution, verify

FORMULA_CHARS = st.sampled_from(list("0123456789+-*/()= ") + ["10", "13", "((", "))", "**", "//"])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_verifier_never_raises_on_arbitrary_text(text):
    v = verify(text, [10, 5, 10, 1], ["K", "5", "10", "A"], language_only=False)
    assert isinstance(v.reward, float)
    assert v.verify_info.endswith(".") or v.verify_info == "you recognized wrong cards"


@settings(max_examples=400, deadline=None)
@given(st.lists(FORMULA_CHARS, max_size=40).map("".join), st.booleans())
def test_verifier_never_raises_on_formula_like_text(formula, json_form):
    text = ('{"formula": "%s"}' % formula) if json_form else ('"formula": "%s"' % formula)
    v = verify(text, [1, 2, 3, 4])
    assert v.reward in {5.0, 1.0, 0.0, -1.0} or v.reward <= -2.0


def test_verifier_survives_megabyte_and_deeply_nested_inputs():
    for formula in ["(" * 500_000 + "1+2+3+4" + ")" * 500_000, "(" * 1_000_000, "1+" * 400_000 + "1",
                    "9" * 1_000_000, "(" * 150 + "1+2+3+4" + ")" * 150]:
        v = verify('"formula": "' + formula + '"', [1, 2, 3, 4])
        assert isinstance(v.reward, float)
    big = "x" * 2_000_000 + '"formula": "1*2*3*4"'
    assert verify(big, [1, 2, 3, 4]).reward == 5.0


@st.composite
def expressions(draw, depth=3):
    """A random expression tree over 1..13, returned as (text, exact intermediates)."""
    if depth == 0 or draw(st.booleans()):
        n = draw(st.integers(1, 13))
        return str(n), [Fraction(n)]
    op = draw(st.sampled_from("+-*/"))
    left, lv = draw(expressions(depth=depth - 1))
    right, rv = draw(expressions(depth=depth - 1))
    a, b = lv[-1], rv[-1]
    if op == "/" and b == 0:
        op = "+"
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
    return f"({left}){op}({right})", lv + rv + [value]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_paper_and_exact_agree_whenever_float_arithmetic_is_exact(expr):
    text, intermediates = expr
    exact = arith.evaluate(text, "exact")
    assert exact == intermediates[-1]
    if all(Fraction(float(q)) == q for q in intermediates):
        assert arith.evaluate(text, "paper") == exact


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 13), min_size=4, max_size=4), st.sampled_from([24, 24, 10, 36]))
def test_every_canonical_solution_verifies_exactly(values, target):
    for sol in distinct_solutions(values, target):
        assert is_solution(sol, values, target)
