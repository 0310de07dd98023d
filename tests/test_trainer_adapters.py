"""Trainer adapters (models/adapters): TRL environments, verl interactions, datasets — and the
golden equivalence of the engine, the Gymnasium env, the TRL adapter and the verl adapter on the
conformance vectors. Every test name contains `trl` or `verl` (`pytest -k "trl or verl"`)."""
from __future__ import annotations

import asyncio
import functools
import importlib.util
import inspect
import json
import math
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import game.envs  # noqa: F401  (registers the Gymnasium envs)
from conftest import ROOT, load_conformance
from game.gp.cards import Card, Rule
from game.gp.deal import Deal
from game.gp.episode import Episode as GPEpisode
from game.gp.verifier import parse_reply
from game import protocol
from game.tasks import TASKS, get_task, route_data
from game.virl.env import VirlEnv
from game.virl.episode import start_episode
from game.virl.routes import ROUTE_FILE, exact_mapping, parse_route_infos
from game.virl.verifier import re_match
from models.adapters._engine import (EpisodeOver, Instance, InstanceError, gp_reply, instance_json, instances,
                                     open_episode, splits, virl_reply)
from models.adapters.dataset import max_user_turns, trl_rows, verl_rows, write_parquet
from models.adapters.trl import ENVIRONMENTS, GeneralPointsEnvironment, VirlEnvironment, reply_reward
from models.adapters.verl import GeneralPointsInteraction, VirlInteraction, compute_score

YAML_PATH = ROOT / "models" / "adapters" / "interaction_config.yaml"
ENV_CLASSES = (GeneralPointsEnvironment, VirlEnvironment)


def run(coro):
    return asyncio.run(coro)


def trl_tools(env) -> dict:
    """The tools TRL's GRPOTrainer extracts: public functions of the class except reset/get_reward."""
    return {name: getattr(env, name) for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")}


def steps_of(records) -> list[tuple]:
    return [(float(r["reward"]), r["feedback"], bool(r["terminated"]), bool(r["truncated"])) for r in records]


# ------------------------------------------------------------------------------ golden equivalence


def _gp_expected(line) -> list[tuple]:
    return [(s["reward"], s["verify_info"], s["terminated"], s["truncated"]) for s in line["steps"]]


def _gp_tool_args(text: str) -> dict:
    """The tool arguments a model would pass for a raw reply (formula and cards as written)."""
    parsed = parse_reply(text)
    raw_cards = parsed.raw_cards
    if isinstance(raw_cards, str) and raw_cards != "None":
        cards = [c.strip().strip("'\"") for c in raw_cards.strip().strip("[]").split(",")]
    elif isinstance(raw_cards, list):
        cards = raw_cards
    else:
        cards = []
    return {"cards": cards, "number": [], "formula": parsed.raw_formula}


def test_golden_trl_verl_gym_engine_agree_on_gp_conformance_episodes():
    lines = load_conformance("gp_episodes.jsonl")
    tool_covered = 0
    for line in lines:
        want = _gp_expected(line)
        deal = Deal(tuple(Card.from_id(c) for c in line["card_ids"]), line["target"])
        task = "gp-l" if line["language_only"] else "gp-vl"
        inst = Instance(task, {"deal_id": deal.id, "rule": line["rule"], "verify_iter": line["verify_iter"]})
        outputs = line["outputs"]
        # 1. the task engine, stepped until the episode ends (the reference's 6th call included)
        ep = GPEpisode(deal, Rule.parse(line["rule"]), line["language_only"], line["verify_iter"])
        engine = []
        for out in outputs:
            if ep.done:
                break
            rec = ep.step(out)
            engine.append((rec.reward, rec.verify_info, rec.terminated, rec.truncated))
        # 2. the Gymnasium env
        env = gym.make("sftvsrl/GeneralPoints-v0", rule=line["rule"], target=line["target"],
                       verify_iter=line["verify_iter"], language_only=line["language_only"])
        env.reset(options={"deal_id": deal.id})
        gym_steps = []
        for out in outputs:
            _, reward, terminated, truncated, info = env.step(out)
            gym_steps.append((reward, info["verify_info"], terminated, truncated))
            if terminated or truncated:
                break
        # 3. the verl interaction: raw replies as assistant turns
        inter = GeneralPointsInteraction({"name": task})
        iid = run(inter.start_interaction("rollout", **inst.to_dict()))
        verl_steps, messages, verl_done, texts = [], [], False, []
        for out in outputs:
            messages = messages + [{"role": "assistant", "content": out}]
            verl_done, text, score, meta = run(inter.generate_response(iid, messages))
            verl_steps += [(s["reward"], s["feedback"], s["terminated"], s["truncated"]) for s in meta["steps"]]
            assert score == sum(s["reward"] for s in meta["steps"])
            texts.append(text)
            messages.append({"role": "user", "content": text})
            if verl_done:
                break
        assert verl_done
        verl_return = run(inter.calculate_score(iid))
        run(inter.finalize_interaction(iid))

        assert engine == gym_steps == verl_steps == want, line["episode_id"]
        assert verl_return == line["episode_return"] == sum(s[0] for s in want)
        graded = [s for s in want if s[1] != "step_limit_reached"]
        assert texts == [s[1] if s[0] == 5.0 else "You failed this trial because " + s[1] for s in graded[:-1]] + texts[-1:]

        # 4. the TRL environment: the same replies as tool calls (where a reply is expressible
        #    as tool arguments, i.e. its re-serialised form grades identically)
        trl_env = GeneralPointsEnvironment()
        trl_env.reset(instance=instance_json(inst))
        probe = open_episode(inst)
        args = [_gp_tool_args(o) for o in outputs[:len(graded)]]
        if any(probe.verdict(gp_reply(**a)) != probe.verdict(o) for a, o in zip(args, outputs)):
            continue
        tool_texts = [trl_env.submit_answer(**a) for a in args]
        with pytest.raises(EpisodeOver):
            trl_env.submit_answer(**args[-1])
        assert steps_of(trl_env.steps) == want, line["episode_id"]
        assert tool_texts == texts
        assert trl_env.get_reward() == line["episode_return"]
        tool_covered += 1
    assert len(lines) == 161
    assert tool_covered >= 140, tool_covered      # most scripted replies are plain tool arguments


def _virl_source(tmp_path: Path, line) -> str:
    """The line's route as a route set in the released layout, with the exact mapping the
    conformance episodes were recorded with (start, key points, interpolation candidates)."""
    root = tmp_path / f"route_{line['episode_id']}"
    root.mkdir()
    (root / ROUTE_FILE).write_text(json.dumps([[line["route"]], 1]))
    route = parse_route_infos([[line["route"]], 1])[0][0]
    exact_mapping(route, line["straight_line_length"]).save(root / "gps_pano_mapping.json")
    return str(root)


def test_golden_trl_verl_gym_engine_agree_on_virl_conformance_episodes(tmp_path):
    lines = load_conformance("virl_episodes.jsonl")
    tool_covered = 0
    for line in lines:
        want = [(s["reward"], s["verify_info"], s["terminated"], s["truncated"]) for s in line["steps"]]
        outputs = [c["model_output"] for c in line["calls"]]
        # the registry plays with relocation on and 5 candidates per leg, as every line was recorded
        assert (line["relocation"], line["straight_line_length"]) == (True, 5)
        settings = {"drop_rate": line["drop_rate"], "rng_mode": "reference"}
        # grading does not depend on the modality; the routes have no panoramas, so the L task
        inst = Instance("virl-l", {"source": _virl_source(tmp_path, line), "route": 0,
                                   "seed": line["global_random_seed_before_reset"],
                                   "absolute_action": line["absolute_action"], "verify_iter": line["verify_iter"],
                                   **settings})
        data = route_data(inst.params["source"])
        # 1. the task engine (with the exact mapping of its own, not the route set's)
        ep = start_episode(data.routes, seed=inst.params["seed"], route_idx=0,
                           absolute_action=line["absolute_action"], verify_iter=line["verify_iter"], **settings)
        engine = []
        for out in outputs:
            if ep.done:
                break
            r = ep.step(out)
            engine.append((r.reward, r.verify_info, r.terminated, r.truncated))
        # 2. the Gymnasium env
        env = VirlEnv(data, absolute_action=line["absolute_action"], verify_iter=line["verify_iter"],
                      **settings)
        env.reset(seed=inst.params["seed"], options={"route_idx": 0})
        gym_steps = []
        for out in outputs:
            _, reward, terminated, truncated, info = env.step(out)
            gym_steps.append((reward, info["Verify Info"], terminated, truncated))
            if terminated or truncated:
                break
        # 3. verl
        inter = VirlInteraction({"name": "virl-l"})
        iid = run(inter.start_interaction(None, **inst.to_dict()))
        verl_steps, verl_done, n_turns = [], False, 0
        for out in outputs:
            verl_done, text, score, meta = run(inter.generate_response(iid, [{"role": "assistant", "content": out}]))
            verl_steps += [(s["reward"], s["feedback"], s["terminated"], s["truncated"]) for s in meta["steps"]]
            n_turns += 1
            if verl_done:
                break
        assert verl_done
        assert engine == gym_steps == verl_steps == want, line["episode_id"]
        assert run(inter.calculate_score(iid)) == pytest.approx(sum(s[0] for s in want))
        # 4. TRL tool calls
        trl_env = VirlEnvironment()
        trl_env.reset(instance=inst.to_dict())
        probe = open_episode(inst, auto_close=False)
        ok = True
        args_list = []
        for out in outputs[:n_turns]:
            args = {"current_observation": re_match(out, "current observation"),
                    "current_instruction": re_match(out, "current instruction"), "action": re_match(out, "action")}
            if probe.verdict(virl_reply(**args)) != probe.verdict(out):
                ok = False
                break
            args_list.append(args)
            probe.step(out)
        if not ok:
            continue
        for args in args_list:
            trl_env.take_action(**args)
        assert steps_of(trl_env.steps) == want, line["episode_id"]
        assert trl_env.get_reward() == pytest.approx(sum(s[0] for s in want))
        tool_covered += 1
    assert len(lines) == 122
    assert tool_covered >= 100, tool_covered


# ------------------------------------------------------------------------------ splits


def test_trl_verl_splits_are_the_protocols_plus_the_training_stream():
    from types import SimpleNamespace

    from models.train.tasks import training_task

    for task in TASKS:
        assert splits(task) == ("train", *protocol.splits(task))
        for split in protocol.splits(task):
            assert instances(task, split, 3) == protocol.instances(task, split, 3)
            assert instances(task, split, 2, offset=1) == protocol.instances(task, split, 3)[1:]
        train = instances(task, "train", 4)
        assert train == get_task(task).training_instances(4) and instances(task, "train", 2, offset=2) == train[2:]
        assert {i.params[k] for i in train for k in get_task(task).split("id").params} <= {True, "face10"}
    # the tiny GRPO trainer plays the same stream (its own seed)
    cfg = SimpleNamespace(seed=0, verify_iter=2)
    assert training_task("virl-l").rollouts(cfg)(3) == get_task("virl-l").training_instances(3, seed=0, verify_iter=2)
    with pytest.raises(InstanceError, match="unknown split 'ood'"):
        instances("gp-l", "ood", 1)
    with pytest.raises(InstanceError, match="unknown split 'streets'"):
        trl_rows("virl-vl", "streets", 1)


# ------------------------------------------------------------------------------ TRL contract


def test_trl_tool_schemas_accept_every_tool_method():
    from transformers.utils import get_json_schema

    seen = {}
    for cls in ENV_CLASSES:
        tools = trl_tools(cls())
        assert tools, cls
        for name, method in tools.items():
            schema = get_json_schema(method)
            fn = schema["function"]
            assert fn["name"] == name and fn["description"]
            assert set(fn["parameters"]["required"]) == set(inspect.signature(method).parameters)
            for prop in fn["parameters"]["properties"].values():
                assert prop.get("description"), (name, prop)
            seen[name] = fn
    assert set(seen) == {"submit_answer", "take_action"}
    assert seen["submit_answer"]["parameters"]["properties"]["number"]["items"] == {"type": "integer"}
    assert {task: cls._family for task, cls in ENVIRONMENTS.items()} == {t: get_task(t).family for t in TASKS}


def test_trl_reset_leaks_no_state_between_episodes():
    a, b = instances("gp-l", "id", 2)
    env = GeneralPointsEnvironment()
    env.reset(instance=instance_json(a))
    for _ in range(3):
        env.submit_answer(["1"], [1], "1+1")
    assert len(env.steps) == 3
    before = set(vars(env))
    prompt_b = env.reset(instance=instance_json(b))
    assert set(vars(env)) == before and env.steps == ()
    assert prompt_b == open_episode(b).prompt() and b.params["deal_id"] != a.params["deal_id"]
    fresh = GeneralPointsEnvironment()
    assert fresh.reset(instance=instance_json(b)) == prompt_b
    for e in (env, fresh):
        e.submit_answer(["x"], [0], "1+1")
    expected = open_episode(b).grade_only(gp_reply(["x"], [0], "1+1"))
    assert env.steps == fresh.steps and env.get_reward() == fresh.get_reward() == expected
    # a bad row leaves no episode behind
    with pytest.raises(InstanceError):
        env.reset(instance={"task": "gp-l", "deal_id": "NOTADEAL"})
    assert env.steps == ()
    with pytest.raises(RuntimeError):
        env.get_reward()
    with pytest.raises(InstanceError):
        env.reset(instance=instance_json(instances("virl-l", "id", 1)[0]))


def test_trl_rewards_modes_and_unanswered_rollout():
    inst = instances("gp-l", "id", 1)[0]
    ep = open_episode(inst)
    numbers = ep.session.describe()["numbers"]
    solution = Deal.from_id(inst.params["deal_id"]).solutions()[0]
    results = {}
    for mode in ("return", "final", "success"):
        env = GeneralPointsEnvironment(reward=mode)
        env.reset(instance=instance_json(inst))
        assert env.get_reward() == -3.0          # no tool call: graded as one empty reply
        assert env.submit_answer(["K"], numbers, "1+1").startswith("You failed this trial because ")
        assert env.submit_answer(ep.session.describe()["cards"], numbers, solution + "=24") == "Correct solution."
        results[mode] = env.get_reward()
    first = open_episode(inst).grade_only(gp_reply([], [], "1+1"))
    assert results == {"return": first + 5.0, "final": 5.0, "success": 1.0}
    with pytest.raises(ValueError):
        GeneralPointsEnvironment(reward="bogus")
    factory = functools.partial(GeneralPointsEnvironment, reward="final")
    assert isinstance(factory(), GeneralPointsEnvironment)


def test_trl_reply_reward_grades_completions_single_turn():
    insts = instances("gp-l", "id", 2) + instances("virl-l", "id", 1)
    deal = Deal.from_id(insts[0].params["deal_id"])
    from models.prompts import response_eqn

    good = response_eqn(deal.labels, deal.numbers(), deal.solutions()[0])
    virl_ep = open_episode(insts[2])
    completions = [[{"role": "assistant", "content": good}], "no formula here", virl_ep.session.episode.oracle_reply()]
    rewards = reply_reward(completions=completions, instance=[instance_json(i) for i in insts])
    assert rewards == [5.0, -3.0, 1.0]


def test_trl_vl_rows_carry_the_first_image_and_moves_return_image_blocks():
    rows = trl_rows("gp-vl", "visual-ood", 1)
    (img,) = rows[0]["images"]
    assert img.size == (1200, 1200) and rows[0]["environment"] == "gp-vl"
    env = GeneralPointsEnvironment()
    prompt = env.reset(**rows[0])
    assert "You are observing these four cards in the image." in prompt and "Cards:" not in prompt
    vinst = instances("virl-vl", "id", 1)[0]
    venv = VirlEnvironment()
    venv.reset(instance=instance_json(vinst))
    gt = open_episode(vinst)
    entry = gt.session.episode.entry
    out = venv.take_action(entry.oracle_observation, entry.instruction, entry.gt_action)
    assert isinstance(out, list) and [p["type"] for p in out] == ["image", "text"]
    gt.step(gt.session.episode.oracle_reply())
    assert out[1]["text"] == gt.prompt()
    assert out[0]["image"].size == gt.image().size
    wrong = venv.take_action("No landmark nearby", "", "spin()")
    assert isinstance(wrong, str) and wrong.startswith("You failed this trial because ")


@pytest.mark.slow
def test_trl_grpo_trainer_runs_on_our_environment_with_the_tiny_checkpoint(tmp_path, monkeypatch, request):
    """A real TRL GRPOTrainer: two optimizer steps with environment_factory, then two single-turn
    steps with reply_reward, on CPU with the shipped tiny GP-L checkpoint."""
    pytest.importorskip("trl")
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import llama3_2_chat_template

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # the tiny model is fastest on one thread (~16 s, not ~140 s)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    ckpt = ROOT / "models" / "checkpoints" / "gp-l-sft"
    tok = AutoTokenizer.from_pretrained(ckpt)
    # our checkpoint's own template is the paper's (no tool turns); TRL needs a tool-calling one
    tok.chat_template = llama3_2_chat_template
    rows = trl_rows("gp-l", "train", 4)

    def config(out: str, **kw):
        return GRPOConfig(output_dir=str(tmp_path / out), per_device_train_batch_size=2, num_generations=2,
                          max_completion_length=48, max_steps=2, learning_rate=1e-5, logging_steps=1,
                          save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0, **kw)

    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(ckpt), processing_class=tok,
                          args=config("env", max_tool_calling_iterations=5),
                          train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "instance")} for r in rows]),
                          environment_factory=GeneralPointsEnvironment)
    out = trainer.train()
    assert out.global_step == 2
    logs = [h for h in trainer.state.log_history if "rewards/GeneralPointsEnvironment/mean" in h]
    assert len(logs) == 2
    pool = trainer._environment_pool[None]
    assert pool and all(isinstance(e, GeneralPointsEnvironment) and e._episode is not None for e in pool)
    dealt = {json.loads(r["instance"])["params"]["deal_id"] for r in rows}
    assert {e._episode.session.describe()["deal_id"] for e in pool} <= dealt
    for h in logs:
        assert math.isfinite(h["rewards/GeneralPointsEnvironment/mean"])

    # single-turn: the checkpoint answers in the paper's format, graded by reply_reward
    tok2 = AutoTokenizer.from_pretrained(ckpt)
    single = Dataset.from_list([{"prompt": [{"role": "user", "content": open_episode(r["instance"]).prompt()}],
                                 "instance": r["instance"]} for r in rows])
    trainer2 = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(ckpt), processing_class=tok2,
                           reward_funcs=[reply_reward], args=config("single"), train_dataset=single)
    assert trainer2.train().global_step == 2
    means = [h["rewards/reply_reward/mean"] for h in trainer2.state.log_history if "rewards/reply_reward/mean" in h]
    assert len(means) == 2 and all(-30.0 <= m <= 5.0 for m in means)


# ------------------------------------------------------------------------------ verl contract


def _load_like_verl(class_name: str):
    """Resolve `module.Class` the way verl's interaction registry does (importlib spec + exec)."""
    module_name, cls_name = class_name.rsplit(".", 1)
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.find_spec(module_name)
        assert spec is not None and spec.loader is not None, module_name
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return getattr(module, cls_name)


def test_verl_interaction_yaml_loads_by_dotted_path_with_the_paper_budgets(monkeypatch):
    import yaml

    monkeypatch.delitem(sys.modules, "models.adapters.verl", raising=False)
    items = yaml.safe_load(YAML_PATH.read_text())["interaction"]
    assert [i["name"] for i in items] == list(TASKS)
    interactions = {}
    for item in items:
        cls = _load_like_verl(item["class_name"])
        config = dict(item["config"], name=item["name"])
        interactions[item["name"]] = cls(config=config)
        assert config["verify_iter"] == {"gp": 5, "virl": 2}[get_task(item["name"]).family]
    assert "verl" not in sys.modules       # duck-typed: nothing imported verl
    # the YAML's budget is what the interactions enforce on rows that do not set one
    gp = interactions["gp-l"]
    iid = run(gp.start_interaction(None, name="gp-l", **instances("gp-l", "id", 1)[0].to_dict()))
    turns = 0
    while True:
        done, text, score, meta = run(gp.generate_response(iid, [{"role": "assistant", "content": "?"}]))
        turns += 1
        if done:
            break
    assert turns == 5 and meta["steps"][-1]["feedback"] == "step_limit_reached"
    assert run(gp.calculate_score(iid)) == 5 * -3.0 - 1.0


def test_verl_interactions_interleave_two_instance_ids():
    a, b = instances("gp-l", "id", 2)
    inter = GeneralPointsInteraction({"name": "gp-l", "reward": "return"})
    ia = run(inter.start_interaction("a", **a.to_dict()))
    ib = run(inter.start_interaction("b", **b.to_dict()))
    sol_b = Deal.from_id(b.params["deal_id"]).solutions()[0]
    sol_a = Deal.from_id(a.params["deal_id"]).solutions()[0]
    wrong = '"formula": "1+1"'
    r1 = run(inter.generate_response(ia, [{"role": "assistant", "content": wrong}]))
    r2 = run(inter.generate_response(ib, [{"role": "assistant", "content": f'"formula": "{sol_b}"'}]))
    # a's correct answer must not be graded against b's hand, and vice versa
    r3 = run(inter.generate_response(ia, [{"role": "assistant", "content": f'"formula": "{sol_b}"'}]))
    r4 = run(inter.generate_response(ia, [{"role": "assistant", "content": f'"formula": "{sol_a}"'}]))
    assert r1[0] is False and r1[1].startswith("You failed this trial because ")
    assert r2[:3] == (True, "Correct solution.", 5.0)
    assert r3[0] is False and r3[2] < 0
    assert r4[:3] == (True, "Correct solution.", 5.0)
    assert run(inter.calculate_score(ib)) == 5.0
    assert run(inter.calculate_score(ia)) == r1[2] + r3[2] + 5.0
    # a finished rollout stays finished; finalize releases only its own id
    assert run(inter.generate_response(ib, [{"role": "assistant", "content": wrong}]))[0] is True
    run(inter.finalize_interaction(ia))
    with pytest.raises(KeyError):
        run(inter.calculate_score(ia))
    assert run(inter.calculate_score(ib)) == 5.0
    # V-IRL: two routes at once
    va, vb = instances("virl-l", "rule-ood", 2)
    vi = VirlInteraction({"name": "virl-l"})
    for iid, inst in (("x", va), ("y", vb)):
        run(vi.start_interaction(iid, **inst.to_dict()))
    gx, gy = open_episode(va, auto_close=False), open_episode(vb, auto_close=False)
    while not (gx.done and gy.done):
        for iid, g in (("x", gx), ("y", gy)):
            if g.done:
                continue
            reply = g.session.episode.oracle_reply()
            g.step(reply)
            done, text, score, meta = run(vi.generate_response(iid, [{"role": "user", "content": "p"},
                                                                      {"role": "assistant", "content": reply}]))
            assert score == 1.0 and done == g.done
            if not done:
                assert text == g.prompt()       # the next position's prompt, as the paper's fresh chat
    assert run(vi.calculate_score("x")) == len(gx.steps) and run(vi.calculate_score("y")) == len(gy.steps)
    with pytest.raises(InstanceError):
        run(vi.start_interaction("z", **a.to_dict()))


def test_verl_parquet_rows_and_compute_score(tmp_path):
    import pyarrow.parquet as pq

    from models.prompts import gp_prompt, response_eqn

    gp_path = write_parquet(verl_rows("gp-l", "rule-ood", 5), tmp_path / "gp-l-rule-ood.parquet")
    virl_path = write_parquet(verl_rows("virl-l", "id", 3), tmp_path / "virl-l-id.parquet")
    gp_rows = pq.read_table(gp_path).to_pylist()
    assert len(gp_rows) == 5
    for i, row in enumerate(gp_rows):
        kw = row["extra_info"]["interaction_kwargs"]
        assert row["data_source"] == "sftvsrl/gp-l" and row["agent_name"] == "tool_agent"
        assert kw["name"] == kw["task"] == "gp-l" and kw["params"]["rule"] == "face_jqk"
        assert row["extra_info"] == {"split": "rule-ood", "index": i, "interaction_kwargs": kw}
        deal = Deal.from_id(kw["params"]["deal_id"])
        assert deal.has_face_card          # rule-OOD dealing
        assert row["prompt"] == [{"role": "user", "content": gp_prompt(deal.labels, Rule.FACE_JQK)}]
        truth = json.loads(row["reward_model"]["ground_truth"])
        assert truth == {"task": "gp-l", "params": kw["params"]} and row["reward_model"]["style"] == "rule"
        good = response_eqn(deal.labels, deal.numbers(Rule.FACE_JQK), deal.solutions(Rule.FACE_JQK)[0])
        assert compute_score(row["data_source"], good, row["reward_model"]["ground_truth"], row["extra_info"]) == 5.0
        assert compute_score(row["data_source"], "nothing", None, row["extra_info"]) == -3.0
    # the first 234 ID rows are the paper's evaluation hands (seed 42)
    from game.gp.deal import evaluation_hands

    assert [r["extra_info"]["interaction_kwargs"]["params"]["deal_id"] for r in verl_rows("gp-l", "id", 3)] == \
        [h.id for h in evaluation_hands("language_id", 3)]
    virl_rows_ = pq.read_table(virl_path).to_pylist()
    for i, row in enumerate(virl_rows_):
        kw = row["extra_info"]["interaction_kwargs"]
        params = kw["params"]
        assert (params["route"], params["seed"], params["absolute_action"]) == (i, i, True)
        ep = open_episode(row["reward_model"]["ground_truth"])
        assert row["prompt"][0]["content"] == ep.prompt()
        assert compute_score("sftvsrl/virl-l", ep.session.episode.oracle_reply(),
                             row["reward_model"]["ground_truth"]) == 1.0
    with pytest.raises(InstanceError):
        compute_score("sftvsrl/gp-l", "x", virl_rows_[0]["reward_model"]["ground_truth"])
    vl = verl_rows("gp-vl", "id", 1)[0]
    assert vl["prompt"][0]["content"].startswith("<image>") and vl["images"][0]["bytes"][:4] == b"\x89PNG"


def test_verl_max_user_turns_never_cuts_an_episode_short():
    """verl stops a rollout once user_turns reaches max_user_turns (checked after each assistant
    turn, before the interaction); with our value the interaction always ends the episode first."""
    for task, split, n in (("gp-l", "id", 3), ("virl-l", "id", 6), ("virl-l", "train", 4)):
        rows = verl_rows(task, split, n)
        limit = max_user_turns(rows)
        if task == "gp-l":
            assert limit == 5
        inter = (GeneralPointsInteraction if task.startswith("gp") else VirlInteraction)({"name": task})
        for row in rows:
            kw = row["extra_info"]["interaction_kwargs"]
            iid = run(inter.start_interaction(None, **kw))
            # worst case: fail once at every position, then answer right (GP: always wrong)
            oracle = open_episode(row["reward_model"]["ground_truth"], auto_close=False)
            user_turns, done, failed_here = 0, False, False
            while not done:
                assert user_turns < limit, (task, kw)        # verl would cut the rollout here
                if task.startswith("gp") or failed_here:
                    reply = "?" if task.startswith("gp") else oracle.session.episode.oracle_reply()
                    failed_here = False
                else:
                    reply, failed_here = "?", True
                if not task.startswith("gp"):
                    oracle.step(reply)
                done, _, _, _ = run(inter.generate_response(iid, [{"role": "assistant", "content": reply}]))
                user_turns += 1
            if task.startswith("virl"):
                assert run(inter.calculate_score(iid)) == pytest.approx(
                    sum(s.reward for s in oracle.steps))
        if task.startswith("virl"):
            assert limit == max(2 * open_episode(r["reward_model"]["ground_truth"]).session.describe()["rail_length"]
                                for r in rows)
