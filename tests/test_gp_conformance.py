"""GeneralPoints conformance: every golden vector from the reference implementation must agree."""
from __future__ import annotations

import pytest

from conftest import load_conformance
from game.gp.cards import Card, Rule
from game.gp.deal import EVAL_CONFIGS, Deal, evaluation_hands
from game.gp.episode import Episode, EpisodeOver
from game.gp.solver import reference_solutions, solution_table
from game.gp.verifier import ILLEGAL_FORMULA, parse_reply, verify


def test_verifier_vectors():
    rows = load_conformance("gp_verifier.jsonl")
    mismatches = []
    for r in rows:
        v = verify(r["model_output"], r["numbers"], r["cards"], target=r["target"],
                   language_only=r["language_only"])
        parsed = parse_reply(r["model_output"])
        if r.get("exception"):
            # The reference raised (a JSON formula that is not a string); we answer as illegal.
            got_ok = v.reward == ILLEGAL_FORMULA and v.reference_exception is not None
        else:
            got_ok = (v.reward, v.verify_info, v.terminated) == (r["reward"], r["verify_info"], r["terminated"])
        got_ok &= parsed.formula == r["debug_parsed_formula"] and parsed.cards == r["debug_parsed_cards"]
        if not got_ok:
            mismatches.append((r["id"], r["category"], r.get("verify_info"), v.verify_info))
    assert not mismatches, f"{len(mismatches)}/{len(rows)} verifier lines differ, first: {mismatches[:5]}"
    assert len(rows) > 4000


def test_episode_vectors():
    rows = load_conformance("gp_episodes.jsonl")
    for r in rows:
        hand = Deal(tuple(Card.from_id(c) for c in r["card_ids"]), r["target"])
        ep = Episode(hand, Rule.parse(r["rule"]), r["language_only"], r["verify_iter"])
        assert ep.numbers == r["numbers"]
        for output, expected in zip(r["outputs"], r["steps"]):
            if ep.done:
                # The reference grades calls after truncation again; we refuse them clearly.
                assert r["kind"] == "continues_after_truncation"
                with pytest.raises(EpisodeOver):
                    ep.step(output)
                break
            rec = ep.step(output)
            got = (rec.reward, rec.verify_info, rec.terminated, rec.truncated, rec.remaining_after)
            want = (expected["reward"], expected["verify_info"], expected["terminated"],
                    expected["truncated"], expected["remaining_step_after"])
            assert got == want, (r["episode_id"], r["kind"], expected["call"])
        assert ep.success == r["success"], r["episode_id"]
        if r["kind"] != "continues_after_truncation":
            assert ep.episode_return == r["episode_return"]


def test_solution_table_vectors():
    rows = load_conformance("gp_solutions.jsonl")
    table = solution_table(24)
    assert len(rows) == 1820 == len(table)
    for r in rows:
        key = tuple(r["values"])
        assert list(table[key]) == r["solutions"], key
        assert list(reference_solutions(key)) == r["solutions"]
        assert bool(table[key]) == r["solvable"]
    assert sum(r["solvable"] for r in rows) == 1362
    assert sum(r["solvable"] for r in rows if r["all_values_le_10"]) == 566


def test_float_exact_subset_matches_paper_verdicts():
    """Solutions that Python floats get right are exactly those our paper evaluator scores +5."""
    rows = [r for r in load_conformance("gp_solutions.jsonl") if r["n_float_exact"] != r["n_solutions"]]
    assert len(rows) == 45
    for r in rows:
        for sol in r["solutions"]:
            wanted = sol in r["float_exact_solutions"]
            v = verify('"formula": "' + sol + '"', r["values"], target=24)
            assert (v.reward == 5.0) == wanted, sol
            assert v.exact_correct and v.float_rejected == (not wanted)


def test_deal_vectors():
    rows = load_conformance("gp_deals.jsonl")
    by_config: dict[str, list[dict]] = {}
    for r in rows:
        by_config.setdefault(r["config"], []).append(r)
    assert set(by_config) == set(EVAL_CONFIGS)
    for config, lines in by_config.items():
        lines.sort(key=lambda r: r["index"])
        hands = evaluation_hands(config, n=len(lines) - 1, include_constructor_hand=True)
        rule = EVAL_CONFIGS[config].rule
        for hand, r in zip(hands, lines, strict=True):
            assert (hand.card_ids, hand.labels, hand.numbers(rule)) == (r["card_ids"], r["cards"], r["numbers"]), \
                (config, r["index"])
