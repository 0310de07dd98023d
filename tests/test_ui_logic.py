"""UI logic without a browser: the pure functions behind the 24 Points and V-IRL tabs."""
from __future__ import annotations

import pytest

from app.ui import build_ui
from app.ui import gp_play as play
from app.ui import virl_play as vp


def test_people_only_ui_builds_without_services():
    """The tabs for people (no models, no store) build on their own, e.g. for an engines-only demo."""
    assert build_ui(None) is not None


def test_deal_is_seeded_and_ood_rule_forces_a_face_card():
    a = play.deal_table("7", "face10", "24", "mixed", "paper")
    assert a == play.deal_table("7", "face10", "24", "mixed", "paper")
    ood = play.deal_table("7", "face_jqk", "24", "black", "deck")
    assert ood.deal.has_face_card and all(c.suit in "SC" for c in ood.deal.cards)
    assert play.flip_rule(ood).rule == "face10" and play.flip_rule(ood).deal_id == ood.deal_id


@pytest.mark.parametrize("seed, target, message", [("x", "24", "whole number"), ("-1", "24", "between"),
                                                   ("1", "0", "from 1 to 1000"), ("1", "461", "nearest reachable targets: 460, 462"), ("1", "abc", "whole number")])
def test_bad_input_is_a_clear_message(seed, target, message):
    with pytest.raises(play.InputError, match=message):
        play.deal_table(seed, "face10", target, "mixed", "paper")


def test_check_subtotal_and_float_rejection():
    t = play.Table("HKC5D2C4")
    html, solved = play.check_html(t, "(10+2×5)+4")
    assert solved and 'data-outcome="correct"' in html
    html, solved = play.check_html(play.Table(play.Deal.from_labels(["2", "5", "6", "10"]).id), "2/5*6*10")
    assert not solved and "rejected by float rounding" in html
    assert "= <b>12</b>" in play.subtotal_html(t, "(10+2*")  # dangling operator dropped, ( closed
    assert "not in your hand: 7" in play.subtotal_html(t, "10+7")
    assert "Only numbers" in play.subtotal_html(t, "10 ^ 2")


def test_hints_are_progressive_and_links_round_trip():
    t = play.Table("HKC5D2C4")
    first, t1 = play.hint_html(t)
    second, _ = play.hint_html(t1)
    assert "Try starting with" in first and "10+5*2+4=24" in second
    assert play.table_from_link(t.link()) == play.Table("HKC5D2C4", "face10")
    assert play.table_from_link({"deal": "garbage"}) is None


def test_virl_walk_replays_and_refuses_illegal_actions():
    walk = vp.new_walk("bundled:helsinki", 0, True)
    ep = vp.episode_of(walk)
    walk2 = vp.act(walk, ep.entry.gt_action)
    assert vp.episode_of(walk2).records[0].reward == 1.0
    with pytest.raises(vp.InputError, match="not an action"):
        vp.act(walk, "left")  # a relative action in the absolute space
    with pytest.raises(vp.InputError, match="does not exist"):
        vp.new_walk("bundled:helsinki", 10**6, True)
    assert vp.walk_from_link(walk.link()) == walk
