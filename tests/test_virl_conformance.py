"""V-IRL conformance: every line of virl_rewards / virl_routes / virl_episodes.jsonl must match."""
from __future__ import annotations

import random

import pytest

from conftest import load_conformance
from game.virl.episode import start_episode
from game.virl.rail import action_space_text, build_rail
from game.virl.routes import PanoMapping, parse_route_infos
from game.prompts import feedback_text
from game.virl.verifier import re_match, verify
from models.chat import starts_new_chat as starts_fresh_chat

RAIL_FIELDS = ("heading", "gt_action", "relative_action", "observation", "intersection_observation",
               "instruction", "instruction_idx")


def _route(line):
    return parse_route_infos([[line["route"]], 1], f"{line.get('route_id')}")[0][0]


def _assert_prompt_fields(prompt: str, instruction: str, action_space: str, obs_act_seq: str) -> None:
    """The prompt template belongs to the model layer; we check the three strings we supply
    appear exactly where the template puts them."""
    assert "[Instruction]\n" + instruction + "\n\n[" in prompt
    assert "[Action space]\n" + action_space + "\n\n[Observations and actions sequence]\n" in prompt
    assert "[Observations and actions sequence]\n" + obs_act_seq + "\n\n[Output]\n" in prompt


def test_rewards_conformance():
    lines = load_conformance("virl_rewards.jsonl")
    mismatches = []
    for line in lines:
        v = verify(line["model_output"], line["gt_action"], line["gt_observation"])
        ok = (re_match(line["model_output"], "action") == line["debug_parsed_action"]
              and re_match(line["model_output"], "current observation") == line["debug_parsed_observation"])
        if "exception" in line:
            # the reference raises TypeError; we answer as for a missing observation
            ok = ok and v.reference_raises and v.reward in (-1.0, -1.5)
        else:
            ok = ok and v.reward == line["reward"] and v.verify_info == line["verify_info"]
            ok = ok and not v.reference_raises
        if not ok:
            mismatches.append(line["id"])
    assert len(lines) == 1860
    assert mismatches == []


def test_reference_crash_cases_are_graded_as_missing_observation():
    lines = [l for l in load_conformance("virl_rewards.jsonl") if "exception" in l]
    assert lines
    for line in lines:
        v = verify(line["model_output"], line["gt_action"], line["gt_observation"])
        missing = verify('{"action": "' + str(v.parsed_action) + '"}', line["gt_action"], line["gt_observation"])
        assert (v.reward, v.verify_info) == (missing.reward, missing.verify_info)


def test_routes_conformance():
    lines = load_conformance("virl_routes.jsonl")
    mismatches = []
    for n, line in enumerate(lines):
        route = _route(line)
        rng = random.Random(line["global_random_seed_before_reset"])
        h0 = route.record_init_heading or rng.randint(0, 359)
        mapping = PanoMapping(line["gps_pano_mapping"]) if line["relocation"] else None
        rail = build_rail(route, h0, absolute_action=line["absolute_action"], mapping=mapping,
                          relocation=line["relocation"], drop_rate=line["drop_rate"],
                          straight_line_length=line["straight_line_length"], rng=rng)
        problems = []
        if h0 != line["init_heading"]:
            problems.append("init_heading")
        if rail.instruction_text != line["instruction_text"]:
            problems.append("instruction_text")
        if action_space_text(line["absolute_action"]) != line["action_space"]:
            problems.append("action_space")
        if len(rail.entries) != len(line["rail"]):
            problems.append("rail length")
        for i, (ours, ref) in enumerate(zip(rail.entries, line["rail"])):
            for key in RAIL_FIELDS:
                if key in ref and getattr(ours, key) != ref[key]:
                    problems.append(f"{i}.{key}")
            if list(ours.position) != ref["position"]:
                problems.append(f"{i}.position")
        if "oracle_observation" in line["rail"][0]:
            # walk the rail with correct answers, L and VL, and compare every step
            ep_l = start_episode([route], seed=line["global_random_seed_before_reset"], route_idx=0,
                                 absolute_action=line["absolute_action"], mapping=mapping,
                                 relocation=line["relocation"], drop_rate=line["drop_rate"],
                                 verify_iter=line["verify_iter"], language_only=True, rng_mode="reference")
            info0 = ep_l.info
            for key, value in line["info_at_reset"].items():
                if info0[key] != value:
                    problems.append(f"info_at_reset.{key}")
            for i, ref in enumerate(line["rail"]):
                info = ep_l.info
                got = {"oracle_observation": ep_l.oracle_observation,
                       "info_instruction_idx": info["instruction_idx"],
                       "info_current_instruction": info["current_instruction"],
                       "obs_act_seq_L": ep_l.obs_act_seq(language_only=True),
                       "obs_act_seq_VL": ep_l.obs_act_seq(language_only=False)}
                for key, value in got.items():
                    if value != ref[key]:
                        problems.append(f"{i}.{key}")
                try:
                    _assert_prompt_fields(ref["prompt_L"], ep_l.instruction_text, ep_l.action_space_text,
                                          got["obs_act_seq_L"])
                    _assert_prompt_fields(ref["prompt_VL"], ep_l.instruction_text, ep_l.action_space_text,
                                          got["obs_act_seq_VL"])
                except AssertionError:
                    problems.append(f"{i}.prompt")
                rec = ep_l.step(ref["walk_model_output"])
                if (rec.reward, rec.verify_info, rec.terminated, rec.truncated, rec.is_success) != (
                        ref["walk_reward"], ref["walk_verify_info"], ref["walk_terminated"],
                        ref["walk_truncated"], ref["walk_is_success"]):
                    problems.append(f"{i}.walk")
        if problems:
            mismatches.append((n, line["route_id"], problems[:5]))
    assert len(lines) == 242
    assert mismatches == []


def test_episodes_conformance():
    lines = load_conformance("virl_episodes.jsonl")
    mismatches = []
    for line in lines:
        route = _route(line)
        ep = start_episode([route], seed=line["global_random_seed_before_reset"], route_idx=0,
                           absolute_action=line["absolute_action"], relocation=line["relocation"],
                           drop_rate=line["drop_rate"], straight_line_length=line["straight_line_length"],
                           verify_iter=line["verify_iter"], language_only=line["language_only"],
                           rng_mode="reference")
        problems = []
        if ep.rail.init_heading != line["init_heading"] or ep.rail.gt_actions != line["rail_gt_actions"]:
            problems.append("rail")
        prev_output, prev_info = None, None
        chat_len = 0
        for call in line["calls"]:
            msgs = call["messages_sent"]
            # chat assembly: fresh prompt after reset / a correct action, else feedback turns
            if starts_fresh_chat(prev_info):
                chat_len = 1
            else:
                chat_len += 2
                if (msgs[-2]["role"], msgs[-2]["content"][-1]["text"]) != ("assistant", prev_output):
                    problems.append(f"{call['call']}.assistant")
                if msgs[-1]["content"][-1]["text"] != feedback_text(prev_info):
                    problems.append(f"{call['call']}.feedback")
            if len(msgs) != chat_len:
                problems.append(f"{call['call']}.chat_len")
            first = msgs[0]["content"]
            kinds = [c["type"] for c in first]
            if kinds != (["text"] if line["language_only"] else ["image", "text"]):
                problems.append(f"{call['call']}.content_types")
            if starts_fresh_chat(prev_info):
                try:
                    _assert_prompt_fields(first[-1]["text"], ep.instruction_text, ep.action_space_text,
                                          ep.obs_act_seq())
                except AssertionError:
                    problems.append(f"{call['call']}.prompt")
            if ep.index != call["rail_index_before"] or ep.entry.gt_action != call["gt_action_before"]:
                problems.append(f"{call['call']}.before")
            rec = ep.step(call["model_output"])
            for key in ("reward", "verify_info", "terminated", "truncated", "is_success", "rail_index_after"):
                if getattr(rec, key) != call[key]:
                    problems.append(f"{call['call']}.{key}")
            for key, value in call["info_after"].items():
                if ep.info[key] != value:
                    problems.append(f"{call['call']}.info.{key}")
            prev_output, prev_info = call["model_output"], rec.verify_info
        steps = [(r.reward, r.verify_info, r.terminated, r.truncated, r.is_success) for r in ep.records]
        if steps != [(s["reward"], s["verify_info"], s["terminated"], s["truncated"], s["is_success"])
                     for s in line["steps"]]:
            problems.append("steps")
        if ep.success != line["final_is_success"] or ep.per_step_accuracy != pytest.approx(line["per_step_accuracy"]):
            problems.append("metrics")
        if problems:
            mismatches.append((line["episode_id"], line["policy"], problems[:5]))
    assert len(lines) == 122
    assert mismatches == []
