"""Prompt and chat conformance: every prompt, feedback turn, SFT response and chat payload in the
golden vectors must be reproduced byte for byte by `models.prompts` / `models.chat`."""
from __future__ import annotations

import pytest

from conftest import load_conformance
from game.gp.cards import Rule
from models.chat import Conversation, gp_chat, next_chat, starts_new_chat, user_message
from models.decoding import DecodingSettings, paper_defaults
from models.prompts import (
    FEEDBACK_PREFIX, TEMPLATE_NAMES, feedback_text, gp_prompt, gp_prompt_variant, response_eqn,
    response_virl, virl_action_space, virl_prompt,
)


def _mismatches(pairs):
    bad = [(i, exp, got) for i, (exp, got) in enumerate(pairs) if exp != got]
    return bad


# ---------------------------------------------------------------- GeneralPoints prompts


def test_gp_prompts_conformance_100_percent():
    lines = [l for l in load_conformance("gp_prompts.jsonl") if l["kind"] == "prompt"]
    assert len(lines) > 500
    pairs = []
    for line in lines:
        assert TEMPLATE_NAMES[line["variant"]] == line["template"]
        pairs.append((line["prompt"], gp_prompt_variant(line["variant"], line["cards"], line["rule"])))
    bad = _mismatches(pairs)
    assert not bad, f"{len(bad)}/{len(pairs)} prompts differ; first: {bad[0]}"


def test_gp_feedback_lines_conformance():
    lines = [l for l in load_conformance("gp_prompts.jsonl") if l["kind"] == "feedback"]
    assert len(lines) > 100
    for line in lines:
        assert feedback_text(line["verify_info"]) == line["text"]
        assert line["role"] == "user"


def test_gp_response_eqn_conformance():
    solutions = {tuple(l["values"]): l["solutions"] for l in load_conformance("gp_solutions.jsonl")}
    lines = [l for l in load_conformance("gp_prompts.jsonl") if l["kind"] == "prompt"]
    for line in lines:
        first = solutions[tuple(sorted(line["numbers"]))][0]
        assert response_eqn(line["cards"], line["numbers"], first) == line["response_eqn_example"]
        assert response_eqn(line["cards"], line["numbers"], first + "=24") == line["response_eqn_example"]


def test_gp_prompt_spec_example_and_quirks():
    text = gp_prompt(["K", "5", "10", "A"], Rule.FACE10)
    assert text.startswith("\n[Task Description]\n") and text.endswith("}\n\n")
    assert "count as '10'., and each card" in text
    assert "Cards: ['K', '5', '10', 'A']\n" in text
    assert "valid json" not in text
    vl = gp_prompt(None, "11-13", vision=True)
    assert "[Input]" not in vl and "valid json file" in vl
    assert vl.count("'11', '12', and '13' respectively.") == 2
    assert gp_prompt(["A", "2", "3", "4"], "face10", eg=True).endswith("Please only output the json.\n")
    with pytest.raises(ValueError):
        gp_prompt(None, "face10")
    with pytest.raises(ValueError):
        gp_prompt_variant("XL", ["A", "2", "3", "4"])


# ---------------------------------------------------------------- V-IRL prompts


def test_virl_route_prompts_conformance_100_percent():
    n = 0
    for line in load_conformance("virl_routes.jsonl"):
        assert virl_action_space(line["absolute_action"]) == line["action_space"]
        for entry in line["rail"]:
            if "prompt_L" not in entry:
                continue
            got_l = virl_prompt(line["instruction_text"], entry["obs_act_seq_L"], line["action_space"])
            got_vl = virl_prompt(line["instruction_text"], entry["obs_act_seq_VL"], line["absolute_action"],
                                 vision=True)
            assert got_l == entry["prompt_L"], (line["route_id"], entry["instruction_idx"])
            assert got_vl == entry["prompt_VL"], (line["route_id"], entry["instruction_idx"])
            assert entry["prompt_VL_content_types"] == ["image", "text"]
            n += 2
    assert n > 1000


def test_virl_response_matches_walk_outputs():
    for line in load_conformance("virl_routes.jsonl"):
        for entry in line["rail"]:
            if "walk_model_output" not in entry:
                continue
            action = entry["gt_action"] if line["absolute_action"] else entry["relative_action"]
            if action not in entry["walk_model_output"]:
                continue
            assert response_virl(entry["oracle_observation"], entry["info_current_instruction"],
                                 action) == entry["walk_model_output"]


def test_virl_prompt_quirks():
    text = virl_prompt("1. Go.\n", "O_1: No landmarks nearby; \nA_1: \n", False, vision=True, eg=True)
    assert "stree tviews. You\nare also" in text
    assert "to be executed. \nThen" in text
    assert "['left', 'right', 'slightly left', 'slightly right']" in text
    assert text.endswith("}\n\nPlease only output the json.\n")


# ---------------------------------------------------------------- chats


def test_gp_episode_conversations_conformance():
    episodes = load_conformance("gp_episodes.jsonl")
    assert episodes
    for ep in episodes:
        vision = not ep["language_only"]
        prompt = gp_prompt(ep["cards"], ep["rule"], ep["target"], vision=vision,
                           eg=ep["template"].endswith("_EG"))
        conv = ep["conversation"]
        # The input to call k is the first 2k-1 messages of the final conversation.
        chat = Conversation(image=vision)
        turns = []
        for k, (output, step) in enumerate(zip(ep["outputs"], ep["steps"]), start=1):
            sent = chat.messages_for(prompt)
            assert sent == conv[: 2 * k - 1], (ep["episode_id"], k)
            assert gp_chat(prompt, turns, image=vision) == sent
            chat.record(output, step["verify_info"])
            turns.append((output, step["verify_info"]))
        assert conv[-1] == {"role": "assistant", "content": [{"type": "text", "text": ep["outputs"][-1]}]}
        # image only in the first user message
        assert [i for i, m in enumerate(conv) for p in m["content"] if p["type"] == "image"] == ([0] if vision else [])


def _instruction_from_prompt(text: str) -> str:
    start = text.index("[Instruction]\n") + len("[Instruction]\n")
    return text[start: text.index("\n\n[", start)]


def test_virl_episode_messages_conformance():
    episodes = load_conformance("virl_episodes.jsonl")
    assert episodes
    calls_checked = 0
    for ep in episodes:
        vision = not ep["language_only"]
        first_text = ep["calls"][0]["messages_sent"][0]["content"][-1]["text"]
        instruction = _instruction_from_prompt(first_text)
        obs_act_seq = ("O_1: You observe an image of 4 views; \nA_1: \n" if vision
                       else "O_1: No landmarks nearby; \nA_1: \n")
        history, verify_info, last_reply = None, None, None
        for call in ep["calls"]:
            prompt = virl_prompt(instruction, obs_act_seq, ep["absolute_action"], vision=vision)
            history = next_chat(history, prompt, verify_info=verify_info, last_reply=last_reply, image=vision)
            assert history == call["messages_sent"], (ep["episode_id"], call["call"])
            verify_info, last_reply = call["verify_info"], call["model_output"]
            obs_act_seq = call["info_after"]["obs_act_seq"]
            calls_checked += 1
    assert calls_checked > 200


def test_chat_reset_rule():
    assert starts_new_chat(None)
    assert starts_new_chat("Correct action.")
    assert not starts_new_chat("Correct solution.")  # GP never resets within an episode
    assert not starts_new_chat("step_limit_reached")
    h = next_chat(None, "P", verify_info=None, image=True)
    h2 = next_chat(h, "P2", verify_info="x.", last_reply="R")
    assert h2[0] == user_message("P", image=True) and h2[2]["content"][0]["text"] == FEEDBACK_PREFIX + "x."
    assert len(h) == 1  # inputs are not mutated
    h2[0]["content"][1]["text"] = "changed"
    h2[0]["content"].append({"type": "image"})
    assert h[0] == user_message("P", image=True)  # and share nothing with the new list
    nested = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a"}}]}]
    copied = next_chat(nested, "P", verify_info="x.", last_reply="R")
    copied[0]["content"][0]["image_url"]["url"] = "b"
    assert nested[0]["content"][0]["image_url"]["url"] == "a"


def test_paper_decoding_defaults():
    assert paper_defaults("gp-l").max_tokens == 256 and paper_defaults("gp-l").temperature is None
    assert paper_defaults("virl-vl", "rl") == DecodingSettings(max_tokens=512, temperature=0.2)
    assert paper_defaults("gp-vl").merged({"max_new_tokens": 8, "stop": "x"}).to_dict() == {
        "max_tokens": 8, "stop": ("x",)}
    with pytest.raises(ValueError):
        paper_defaults("chess")
    with pytest.raises(ValueError):
        DecodingSettings().merged({"temprature": 1})
