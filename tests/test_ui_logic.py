"""UI logic without a browser: the pure functions behind the 24 Points and V-IRL tabs."""
from __future__ import annotations

import pytest

from app.ui import build_ui
from app.ui import gp_play as play
from app.ui import virl_play as vp


def test_people_only_ui_builds_without_services():
    """The tabs for people (no models, no store) build on their own, e.g. for an engines-only demo."""
    assert build_ui(None) is not None


# Events may read these HTML components back from the page: each holds one short line.
SMALL_HTML = {"inspect-summary"}


def test_no_event_posts_a_drawn_view_back(tmp_path):
    """A server event never takes an HTML component as input (bar the one-line ones above): a
    drawn view (the Findings view's inline charts, a replay) is larger than a request body may be
    (`SFTVSRL_MAX_BODY_BYTES`), so reading it back failed with 413 and an Error on the page.
    What a handler needs to know about the page is kept in a `gr.State` instead."""
    import gradio as gr

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, warm_models=False, cpu_workers=1), placeholder=False)
    try:
        demo = build_ui(app.state.ctx)
        posted = []
        for dep in demo.fns.values():
            if dep.fn is None:  # runs in the browser only
                continue
            for block in dep.inputs:
                block = demo.blocks[block] if isinstance(block, int) else block
                if isinstance(block, gr.HTML) and block.elem_id not in SMALL_HTML:
                    posted.append((dep.name, block.elem_id))
        assert not posted, f"events that post an HTML view back: {posted}"
        assert len(demo.fns) > 50   # (the whole UI was walked)
    finally:
        app.state.ctx.store.close()


def test_deal_is_seeded_and_ood_rule_forces_a_face_card():
    a = play.deal_table("7", "face10", "24", "mixed", "paper")
    assert a == play.deal_table("7", "face10", "24", "mixed", "paper")
    ood = play.deal_table("7", "face_jqk", "24", "black", "deck")
    assert ood.deal.has_face_card and all(c.suit in "SC" for c in ood.deal.cards)
    back, note = play.flip_rule(ood)  # J 5 K 8 has no solution with J/Q/K = 10: the nearest that has
    assert back.rule == "face10" and back.deal.has_face_card and "nearest hand of seed 7" in note
    assert play.solvable(back.deal, "face10") and play.solvable(back.deal, "face_jqk")


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
    assert "Only numbers" in play.subtotal_html(t, "10^2")


def test_hints_are_progressive_and_links_round_trip():
    t = play.Table("HKC5D2C4")
    first, t1 = play.hint_html(t)
    second, t2 = play.hint_html(t1)
    third, _ = play.hint_html(t2)
    # issue 25: each hint gives away a little more; the first step is the one computed first
    assert "Try starting with <code>5*2</code>" in first
    assert "10+5*2+□=24" in second and "10+5*2+4=24" not in second
    assert "10+5*2+4=24" in third
    assert play.table_from_link(t.link()) == play.Table("HKC5D2C4", "face10")
    with pytest.raises(play.InputError, match="not a hand"):
        play.table_from_link({"deal": "garbage"})
    assert play.table_from_link({"tab": "gp"}) is None


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


def test_a_models_walk_on_the_map_comes_from_its_step_records(tmp_path, monkeypatch):
    """The model columns draw each model's V-IRL walk from the step records' `state`: a stored
    episode replayed into a column gives the walk the engine made, and while the column reads the
    events no session is opened, so no reply is graded again."""
    import asyncio

    from app.export import replay_events
    from app.runner import ScriptedPlayer, play
    from app.store import Store
    from app.ui.models_panel import COLOURS, Column, walks
    from game.tasks import Instance, open_session
    from game.tasks.virl import VirlTask

    inst = Instance("virl-l", {"route": 0, "seed": 0})
    engine = open_session(inst)
    replies = []
    # two moves, a miss, a move, then misses until the budget is spent (the walk ends there)
    for wrong in (False, False, True, False, True, True, True):
        replies.append("nonsense" if wrong else engine.episode.oracle_reply())
        engine.step(replies[-1])
    rail = engine.episode.rail.entries
    expected = [tuple(rail[i].position) for i in engine.episode.visited]
    assert engine.done and len(expected) == 4

    store = Store(f"sqlite:///{tmp_path / 'eps.db'}")

    async def stored_events():
        played = [ev async for ev in play(ScriptedPlayer("rl", replies), inst, store)]
        return [ev async for ev in replay_events(store, played[0].episode_id)]

    events = asyncio.run(stored_events())

    def no_session(*_a, **_k):
        raise AssertionError("the UI opened a session: it would grade a reply again")

    monkeypatch.setattr(VirlTask, "session", no_session)
    column = Column("rl", "RL", 0, inst)
    for ev in events:
        column.apply(ev)
    assert column.positions == expected and walks([column]) == [(expected, COLOURS[0])]
    assert column.finished is not None and column.finished.n_steps == len(replies)


def test_default_hand_flips_to_a_solvable_ood_hand_with_the_same_cards():
    t = play.default_table()
    assert t.deal.has_face_card
    flipped, note = play.flip_rule(t)
    assert flipped.deal_id == t.deal_id and flipped.rule == "face_jqk" and note == ""
    assert play.solvable(flipped.deal, "face_jqk") and play.solvable(t.deal, "face10")


def test_flip_deals_the_nearest_stream_hand_solvable_under_both_rules():
    t = play.deal_table("7", "face10", "24", "mixed", "paper")  # 6 3 7 J: no solution under 11/12/13
    assert not play.solvable(t.deal, "face_jqk")
    flipped, note = play.flip_rule(t)
    assert flipped.rule == "face_jqk" and flipped.deal_id != t.deal_id and flipped.seed == 7
    assert flipped.deal.has_face_card
    assert play.solvable(flipped.deal, "face10") and play.solvable(flipped.deal, "face_jqk")
    assert "nearest hand of seed 7" in note
    unseeded = play.Table(t.deal_id)  # from a link without a seed: the cards stay, the page says why
    same, note = play.flip_rule(unseeded)
    assert same.deal_id == t.deal_id and "no solution under the other rule" in note


def test_deep_link_restores_every_control_and_names_a_bad_one():
    t = play.deal_table("42", "face_jqk", "30", "red", "deck")
    assert play.table_from_link(t.link()) == t
    for params, message in (({"deal": "NOTADEAL"}, "not a hand"), ({"seed": "1", "suits": "green"}, "unknown suits"),
                            ({"seed": "1", "mode": "x"}, "unknown dealing mode"),
                            ({"seed": "1", "rule": "face11"}, "unknown rule")):
        with pytest.raises(play.InputError, match=message):
            play.table_from_link(params)


@pytest.mark.parametrize("seed", ["1e400", "nan", "9" * 10_000, "2.5"])
def test_absurd_seeds_are_clear_short_messages(seed):
    with pytest.raises(play.InputError) as err:
        play.parse_seed(seed)
    assert len(str(err.value)) < 160 and "seed" in str(err.value)


def test_long_formula_is_refused_fast_and_spaces_are_named_while_typing():
    t = play.Table("H6H3H7DT")
    html, solved = play.check_html(t, "1+" * 5000 + "1")
    assert not solved and "Too long" in html and len(html) < 400
    assert "Remove the spaces" in play.subtotal_html(t, "6 3 7 10")  # no "= 63710"
    assert "= <b>" not in play.subtotal_html(t, "6 3 7 10")


@pytest.mark.parametrize("formula, words", [
    ("6/(3-3)+7+10", "use each card"), ("6*(", "use each card"), ("10 + 5", "no spaces"),
    ("6*3*(10-7)", "it equals 54, not 24"), ("(6+3", "use each card"), ("3*10-6-7", "does not lead to 24"),
])
def test_verdicts_have_a_plain_explanation_beside_the_paper_text(formula, words):
    html, _ = play.check_html(play.Table("H6H3H7DT"), formula)
    assert "Verifier (paper" in html and "In plain words" in html and words in html


def test_division_by_zero_and_float_rounding_are_explained():
    from game.gp.verifier import verify
    from models.prompts import response_eqn

    t = play.Table(play.Deal.from_labels(["3", "3", "8", "8"]).id)
    v = verify(response_eqn(t.deal.labels, t.numbers, "8/(3-3)*8", 24), t.numbers, t.deal.labels)
    assert "divides by zero" in play.explain(v, 24)
    v = verify(response_eqn(t.deal.labels, t.numbers, "8/(3-8/3)", 24), t.numbers, t.deal.labels)
    assert v.outcome.value == "float_rounding" and "floating point" in play.explain(v, 24)


def test_card_alt_text_names_the_suit():
    assert 'alt="king of hearts"' in play.hand_html(play.Table("HKC5D2C4"))


def test_virl_links_restore_the_view_and_name_a_bad_parameter():
    walk = vp.new_walk("bundled:helsinki", 1, False, view="image")
    assert vp.walk_from_link(walk.link()) == walk
    with pytest.raises(vp.InputError, match="action space"):
        vp.walk_from_link({"tab": "virl", "actions": "sideways"})
    with pytest.raises(vp.InputError, match="route"):
        vp.walk_from_link({"tab": "virl", "route": "1e400"})
