"""V-IRL engine behaviour: route data, the released layout, rails, episodes, seeding."""
from __future__ import annotations

import json
import pickle
import random

import pytest

from game.virl.episode import EpisodeOver, obs_act_text, start_episode
from game.virl.geo import relative_turn_word
from game.virl.rail import action_space_text, build_rail, legal_actions
from game.virl.routes import (NO_LANDMARK, PanoMapping, ReleaseDataset, RouteDataError, exact_mapping,
                              load_pickle_mapping, load_routes, parse_milestone_info, parse_route_infos)
from game.virl.verifier import VERIFY_EXCEEDED, verify
from virl_fixtures import fake_release

MOMA_MILESTONES = (
    '\n{\n"intersection_idx": "1",\n"landmarks": "Prince St is on your front",\n"distance": "16 meters",\n'
    '"human_heading": "0",\n"to_next_intersection_heading": "298 (northwest)",\n}\n'
    '\n{\n"intersection_idx": "2",\n"landmarks": "Aritzia is on your left front",\n"distance": "159 meters",\n'
    '"human_heading": "298",\n"to_next_intersection_heading": "212 (southwest)",\n}\n'
    '\n{\n"intersection_idx": "3",\n"landmarks": "The destination MoMA Design Store is on your left",\n'
    '"distance": "70 meters",\n"human_heading": "212",\n"to_next_intersection_heading": "124 (southeast)",\n}\n')


def moma_record(**over):
    rec = {"start_place": {"relocated_geocode": [40.72416229223982, -73.99762612488824]},
           "dest_place": {"name": "MoMA Design Store"},
           "route_results": {"geocode_list": [[40.72422891501083, -73.99779012634859],
                                              [40.72302278542454, -73.9988004045286],
                                              [40.72271488946794, -73.99809813308585]],
                             "landmark_list": [None, None]},
           "init_heading": 0, "milestone_info": MOMA_MILESTONES}
    rec.update(over)
    return rec


def moma():
    return parse_route_infos([[moma_record()], 1])[0][0]


# ---- milestones and routes ------------------------------------------------------------------

def test_milestone_parser_reads_the_template():
    blocks = parse_milestone_info(MOMA_MILESTONES)
    assert [b["to_next_intersection_heading"] for b in blocks] == ["298 (northwest)", "212 (southwest)",
                                                                    "124 (southeast)"]
    assert blocks[1]["landmarks"] == "Aritzia is on your left front"


def test_missing_landmarks_key_defaults_to_singular_no_landmark():
    text = MOMA_MILESTONES.replace('"landmarks": "Aritzia is on your left front",\n', "")
    route = parse_route_infos([[moma_record(milestone_info=text)], 1])[0][0]
    assert route.milestones[1].landmark == NO_LANDMARK


def test_milestone_count_must_match_key_points():
    rec = moma_record()
    rec["route_results"]["geocode_list"] = rec["route_results"]["geocode_list"][:2]
    with pytest.raises(RouteDataError, match="3 milestones for 2 key points"):
        parse_route_infos([[rec], 1], "x.json")


@pytest.mark.parametrize("content, message", [
    ("{not json", "malformed JSON"),
    ('{"a": 1}', "expected a JSON array"),
    ('[[{"route_results": {}}], 1]', "missing required field"),
])
def test_bad_route_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "route_infos.json"
    path.write_text(content)
    with pytest.raises(RouteDataError, match=message) as exc:
        load_routes(path)
    assert str(path) in str(exc.value)


def test_missing_route_file_names_it(tmp_path):
    with pytest.raises(RouteDataError, match="file not found") as exc:
        load_routes(tmp_path / "nope.json")
    assert "nope.json" in str(exc.value)


# ---- the rail -------------------------------------------------------------------------------

def test_moma_worked_example_heading_10():
    route = moma()
    rail = build_rail(route, 10, absolute_action=True, mapping=exact_mapping(route))
    keys = [e for e in rail.entries if e.kind != "forward"]
    assert [e.absolute_action for e in keys] == ["turn_direction(northwest)", "turn_direction(southwest)",
                                                 "turn_direction(southeast)", "stop()"]
    assert [e.relative_action for e in keys] == ["turn_direction(right)", "turn_direction(left)",
                                                 "turn_direction(left)", "stop()"]
    assert keys[3].oracle_observation == "The destination MoMA Design Store is on your left; "
    assert keys[1].oracle_observation == "Prince St is on your front; You observe an intersection"
    # the 16 m leg leaves no candidate more than 8 m from both ends
    assert rail.entries[1].kind == "key"
    assert "2. Move forward until you reach next intersection where Prince St is on your front.\n" in rail.instruction_text


def test_relative_turn_word_does_not_wrap():
    assert relative_turn_word(298 - 10) == "right"        # a 72° left turn, graded "right"
    assert relative_turn_word(10 - 350) == "left"
    assert relative_turn_word(0) == "slightly left"
    assert relative_turn_word(45) == "slightly right"
    assert relative_turn_word(-45) == "slightly left"
    assert relative_turn_word(46) == "right"


def test_action_spaces():
    assert "['north', 'northeast'" in action_space_text(True)
    assert "x could be any following ['left', 'right', 'slightly left', 'slightly right']" in action_space_text(False)
    assert len(legal_actions(True)) == 10 and len(legal_actions(False)) == 6


def test_drop_rate_draws_five_per_long_leg_in_order():
    route = moma()

    class Counter:
        calls = 0

        def random(self):
            Counter.calls += 1
            return 0.99

    build_rail(route, 10, mapping=exact_mapping(route), drop_rate=0.5, rng=Counter())
    assert Counter.calls == 15          # three legs longer than 5 m


def test_relocation_snaps_to_nearest_panorama_within_radius():
    m = PanoMapping([(40.0, -74.0, "a"), (40.0001, -74.0, "b")])
    assert m.relocate((40.0, -74.0)) == (40.0, -74.0)
    assert m.relocate((40.00009, -74.0)) == (40.0001, -74.0)
    assert m.relocate((40.01, -74.0)) is None


# ---- episodes -------------------------------------------------------------------------------

def test_oracle_walk_succeeds_and_history_text():
    ep = start_episode([moma()], seed=5, route_idx=0, heading=10, drop_rate=0.0)
    assert ep.info["instruction_idx"] == 0
    assert ep.obs_act_seq() == "O_1: No landmarks nearby; \nA_1: \n"
    while not ep.done:
        assert ep.step(ep.oracle_reply()).reward == 1.0
    assert ep.success and ep.per_step_accuracy == 1.0
    assert ep.history[0] == ("No landmarks nearby; ", "turn_direction(northwest)")
    record = json.loads(json.dumps(ep.to_dict()))
    assert record["success"] and len(record["steps"]) == ep.n_calls
    assert record["steps"][0]["parsed_action"] == "turn_direction(northwest)"


def test_vl_history_hides_current_landmark_but_keeps_intersection_flag():
    seq = obs_act_text([("No landmarks nearby; ", "turn_direction(north)")],
                       "Prince St is on your front; You observe an intersection", language_only=False)
    assert seq.endswith("O_2: You observe an image of 4 views; You observe an intersection\nA_2: \n")


def test_budget_third_call_truncates_and_fails():
    ep = start_episode([moma()], seed=5, route_idx=0, heading=10, drop_rate=0.0)
    r1 = ep.step("nonsense")
    r2 = ep.step('{"action": "stop()", "current observation": "an intersection"}')
    assert (r1.reward, r2.reward) == (-1.0, -1.5)
    assert r2.is_success and not r2.truncated
    r3 = ep.step(ep.oracle_reply())                 # the third output is ignored
    assert (r3.reward, r3.verify_info, r3.truncated, r3.terminated, r3.is_success, r3.graded) == (
        -1.0, VERIFY_EXCEEDED, True, False, False, False)
    assert not ep.success and ep.per_step_accuracy == 0.0
    with pytest.raises(EpisodeOver):
        ep.step(ep.oracle_reply())


def test_same_seed_same_episode_and_no_global_random_use():
    route = moma()
    random.seed(123)
    state = random.getstate()
    a = start_episode([route], seed=42, drop_rate=0.5)
    b = start_episode([route], seed=42, drop_rate=0.5)
    assert random.getstate() == state
    assert (a.rail.init_heading, a.rail.gt_actions) == (b.rail.init_heading, b.rail.gt_actions)
    seen = {start_episode([route], seed=s, drop_rate=0.5).rail.gt_actions.count("forward()") for s in range(30)}
    assert len(seen) > 1                             # the seed does drive the drops


def test_reference_rng_mode_replays_global_random_order():
    route = moma()
    random.seed(139)
    h = random.randint(0, 359)
    draws = [random.random() for _ in range(15)]
    ep = start_episode([route], seed=139, route_idx=0, drop_rate=0.5, rng_mode="reference")
    assert ep.rail.init_heading == h
    kept = sum(d >= 0.5 for d in draws)
    assert ep.rail.gt_actions.count("forward()") <= kept


def test_reference_crash_reply_is_graded_not_raised():
    v = verify('{"current observation": null, "action": "stop()"}', "forward()", "No landmarks nearby")
    assert v.reference_raises and (v.reward, v.verify_info.startswith("you make incorrect action")) == (-1.0, True)


# ---- a fake release directory ---------------------------------------------------------------

def test_fake_release_runs_episodes_in_both_action_spaces(tmp_path):
    root = fake_release(tmp_path / "nyc_1k_routes")
    with pytest.raises(RouteDataError, match="refusing to unpickle"):
        ReleaseDataset.open(root)
    ds = ReleaseDataset.open(tmp_path, trust_pickle=True)       # the zip's parent folder works too
    assert len(ds.routes) == 4 and ds.street_view_dir is not None
    for absolute in (True, False):
        for i in range(len(ds.routes)):
            ep = start_episode(ds.routes, seed=i, route_idx=i, mapping=ds.mapping, absolute_action=absolute)
            while not ep.done:
                ep.step(ep.oracle_reply())
            assert ep.success


def test_pickle_needs_opt_in_and_refuses_globals(tmp_path, monkeypatch):
    good = tmp_path / "gps_pano_mapping.pkl"
    good.write_bytes(pickle.dumps({(1.0, 2.0): "p"}))
    with pytest.raises(RouteDataError, match="opt-in"):
        load_pickle_mapping(good)
    monkeypatch.setenv("SFTVSRL_VIRL_TRUSTED_PICKLE", str(good))
    assert len(load_pickle_mapping(good)) == 1
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({(1.0, 2.0): RouteDataError("x")}))   # needs a global to load
    with pytest.raises(RouteDataError, match="not a plain pickled mapping"):
        load_pickle_mapping(evil, trusted=True)


def test_mapping_json_round_trip(tmp_path):
    m = exact_mapping(moma())
    m.save(tmp_path / "m.json.gz")
    back = PanoMapping.load(tmp_path / "m.json.gz")
    assert dict(back.items()) == dict(m.items())
    (tmp_path / "bad.json").write_text(json.dumps({"entries": [[1, 2]]}))
    with pytest.raises(RouteDataError, match=r"bad\.json: entry 0"):
        PanoMapping.load(tmp_path / "bad.json")
