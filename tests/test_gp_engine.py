"""GeneralPoints engine behaviour: arithmetic, verifier extras, solver, dealing, episodes."""
from __future__ import annotations

from fractions import Fraction

import pytest

from game.gp import arith
from game.gp.cards import Card, Rule, rank_from_label
from game.gp.deal import Deal, DealConfig, Dealer, deal
from game.gp.episode import Episode, EpisodeOver
from game.gp.solver import distinct_solutions, is_solvable, reference_solutions, solution_table
from game.gp.verifier import Outcome, is_solution, verify


def reply(formula: str) -> str:
    return '\n{\n  "cards": [],\n  "number": [],\n  "formula": "' + formula + '",\n}'


# ------------------------------------------------------------------ arithmetic
@pytest.mark.parametrize("formula, paper, exact", [
    ("10+10+5-1", 24, Fraction(24)),
    ("8/(3-8/3)", 8 / (3 - 8 / 3), Fraction(24)),
    ("2/5*6*10", 2 / 5 * 6 * 10, Fraction(24)),
    ("2*6*10/5", 24.0, Fraction(24)),
    ("7-2-1", 4, Fraction(4)),
    ("8/4/2", 1.0, Fraction(1)),
    ("((((1+2))))*3", 9, Fraction(9)),
])
def test_paper_and_exact_evaluators(formula, paper, exact):
    assert arith.evaluate(formula, "paper") == paper
    assert type(arith.evaluate(formula, "paper")) is type(paper)
    assert arith.evaluate(formula, "exact") == exact


@pytest.mark.parametrize("formula, kind", [
    ("(1+2", "syntax"), ("1+2)", "syntax"), ("08+1", "syntax"), ("1/0", "zero_division"),
    ("1/(2-2)", "zero_division"), ("1+", "syntax"), ("", "syntax"), ("2(3)", "syntax"),
    ("1 + 2", "illegal_characters"), ("2**3", "syntax"), ("(" * 201 + "1" + ")" * 201, "syntax"),
    ("9" * 5000, "too_large"),
])
def test_evaluation_errors_match_python(formula, kind):
    with pytest.raises(arith.FormulaError) as info:
        arith.evaluate(formula, "paper")
    assert info.value.kind == kind


def test_python_accepts_what_we_accept():
    assert arith.evaluate("(" * 200 + "1" + ")" * 200) == 1
    assert arith.evaluate("00+24") == 24  # all-zero literals are legal Python
    assert arith.evaluate("08+16", "exact") == 24  # exact mode reads 08 as 8


# ------------------------------------------------------------------ verifier extras
def test_spec_table_examples():
    cases = [
        ("10+10+5-1", [10, 5, 10, 1], 5.0, "Correct solution."),
        ("10 + 10 + 5 - 1", [10, 5, 10, 1], -3.0, "illegal characters."),
        ("13+10+1", [10, 5, 10, 1], -4.0, "you used invalid numbers: [13], you didn't use numbers: [10, 5]."),
        ("-1+10+10+5", [10, 5, 10, 1], -3.0, "invalid sequence after operator."),
        ("10+10+(5-1", [10, 5, 10, 1], 1.0, "partial solution."),
        ("2(3+4)+6", [2, 3, 4, 6], -6.0, "invalid sequence before '(', unmatched closing parenthesis."),
        ("1+2+3+4", [1, 2, 3, 4], -1.0, "1 is partially correct but the full formula does not match any solution."),
        ("8/(3-8/3)", [3, 3, 8, 8], 0.0, "."),
    ]
    for formula, numbers, reward, info in cases:
        v = verify(reply(formula), numbers)
        assert (v.reward, v.verify_info) == (reward, info), formula


def test_exact_second_opinion_flags_float_rejections():
    v = verify(reply("2/5*6*10"), [2, 5, 6, 10])
    assert v.reward == 0.0 and v.verify_info == "." and v.exact_correct and v.float_rejected
    assert v.outcome is Outcome.FLOAT_ROUNDING
    ok = verify(reply("2*6*10/5"), [2, 5, 6, 10])
    assert ok.reward == 5.0 and ok.exact_correct and not ok.float_rejected
    wrong = verify(reply("1+2+3+4"), [1, 2, 3, 4])
    assert not wrong.exact_correct and wrong.exact_value == "10"


def test_lenient_mode_is_opt_in():
    text = "{'formula': '10 + 10 + 5 - 1'}"
    assert verify(text, [10, 5, 10, 1]).reward == -3.0
    assert verify(text, [10, 5, 10, 1], lenient=True).reward == 5.0
    vl = '{"cards": ["K", "5", "10", "A"], "formula": "10+10+5-1"}'
    assert verify(vl, [10, 5, 10, 1], ["K", "5", "10", "A"], language_only=False).reward == -1.5
    assert verify(vl, [10, 5, 10, 1], ["K", "5", "10", "A"], language_only=False, lenient=True).reward == 5.0


def test_non_string_formula_is_illegal_not_an_exception():
    v = verify('{"formula": 24}', [10, 5, 10, 1])
    assert v.reward == -3.0 and v.reference_exception
    assert verify(None, [1, 2, 3, 4]).reward == -3.0  # type: ignore[arg-type]


def test_outcome_classes():
    assert verify(reply("10+10+5-1"), [10, 5, 10, 1]).outcome is Outcome.CORRECT
    assert verify(reply("1+2+3+5"), [1, 2, 3, 4]).outcome is Outcome.WRONG_NUMBERS
    assert verify(reply("-1+2*(3+4"), [1, 2, 3, 4]).outcome is Outcome.ILLEGAL_FORMULA
    assert verify(reply("-1+2+3+5"), [1, 2, 3, 4]).outcome is Outcome.AGGREGATED
    assert verify(reply("10+10+(5-1"), [10, 5, 10, 1]).outcome is Outcome.PARTIAL


# ------------------------------------------------------------------ solver
def test_solvable_counts_match_classical_24_game():
    table = solution_table(24)
    assert sum(bool(v) for v in table.values()) == 1362
    assert sum(bool(v) for k, v in table.items() if max(k) <= 10) == 566


def test_distinct_solutions_are_exact_and_deduplicated():
    for values in [(10, 5, 2, 4), (1, 2, 3, 4), (3, 3, 8, 8), (1, 5, 5, 5), (6, 6, 6, 6), (1, 1, 1, 8)]:
        sols = distinct_solutions(values)
        assert sols, values
        assert len(set(sols)) == len(sols)
        for s in sols:
            assert is_solution(s, list(values)), (values, s)
    # commutative / associative rewrites collapse to one: 10+10+5-1 has exactly one distinct form
    assert distinct_solutions((1, 5, 10, 10)) == ("10+10+5-1",)
    assert distinct_solutions((10, 5, 2, 4)) == ("10+5*2+4",)
    assert distinct_solutions((1, 1, 1, 1)) == ()


def test_solver_any_target():
    assert "1+2+3+4" in reference_solutions((1, 2, 3, 4), 10)
    assert is_solvable((1, 2, 3, 4), 10)
    with pytest.raises(ValueError, match="positive integer"):
        reference_solutions((1, 2, 3, 4), 0)


# ------------------------------------------------------------------ dealing
def test_deals_are_reproducible_from_the_seed_and_never_touch_global_random():
    import random

    random.seed(1)
    before = random.random()
    random.seed(1)
    a = deal(123)
    assert random.random() == before
    assert a == deal(123) and deal(123) != deal(124)


def test_deal_ids_round_trip():
    for seed in range(30):
        d = deal(seed, mode="deck", target=24 if seed % 2 else 30, suits="red")
        assert Deal.from_id(d.id) == d
        assert Deal.from_id(d.id.lower()) == d
    with pytest.raises(ValueError, match="malformed deal id"):
        Deal.from_id("HKC5D2")
    with pytest.raises(ValueError, match="malformed deal id"):
        Deal.from_id("XXC5D2C4")


def test_deck_mode_has_no_duplicate_cards_and_ood_forces_a_face_card():
    dealer = Dealer(5, DealConfig(Rule.FACE_JQK, ood=True, suits="black", mode="deck"))
    for hand in dealer.take(200):
        assert len(set(hand.cards)) == 4
        assert hand.has_face_card
        assert all(c.suit in "SC" for c in hand.cards)
        assert hand.is_solvable(Rule.FACE_JQK)


def test_paper_mode_every_hand_is_solvable_under_its_rule():
    for cfg in [DealConfig(), DealConfig(Rule.FACE_JQK, ood=True), DealConfig(target=13)]:
        for hand in Dealer(9, cfg).take(100):
            assert hand.is_solvable(cfg.rule)
            assert hand.target == cfg.target
            if cfg.ood:
                assert hand.has_face_card


def test_bad_settings_are_rejected_clearly():
    with pytest.raises(ValueError, match="suits"):
        DealConfig(suits="green")
    with pytest.raises(ValueError, match="target"):
        DealConfig(target=0)
    with pytest.raises(ValueError, match="unknown rule"):
        Rule.parse("face9")
    with pytest.raises(ValueError, match="unknown card"):
        rank_from_label("Z")


def test_card_labels_and_values():
    assert Card.from_id("HT").label == "10" and Card.from_id("HT").card_id == "HT"
    assert Card(1, "S").label == "A"
    hand = Deal.from_labels(["K", "5", "10", "A"])
    assert hand.numbers("face10") == [10, 5, 10, 1]
    assert hand.numbers("11-13") == [13, 5, 10, 1]


# ------------------------------------------------------------------ episodes
def test_episode_budget_and_sixth_call():
    ep = Episode(Deal.from_labels(["K", "5", "10", "A"]))
    for i in range(5):
        rec = ep.step(reply("1+1"))
        assert rec.graded and not rec.truncated and rec.remaining_after == 4 - i
    last = ep.step(reply("10+10+5-1"))  # correct, but ignored: the budget is spent
    assert (last.reward, last.verify_info, last.truncated, last.terminated) == (-1.0, "step_limit_reached", True, False)
    assert not last.graded and ep.done and not ep.success
    with pytest.raises(EpisodeOver):
        ep.step(reply("10+10+5-1"))


def test_episode_partial_does_not_terminate_and_success_does():
    ep = Episode(Deal.from_labels(["K", "5", "10", "A"]))
    assert not ep.step(reply("10+10+(5-1")).terminated
    assert ep.step(reply("10+10+5-1=24")).terminated
    assert ep.success and ep.done and ep.episode_return == 6.0
    with pytest.raises(EpisodeOver):
        ep.step("anything")


def test_episode_without_verification_ends_after_one_step():
    ep = Episode(Deal.from_labels(["K", "5", "10", "A"]), verify_iter=1, enable_verification=False)
    ep.step(reply("1+1"))
    assert ep.done
