"""The staged tiny-model pipeline (base → init → sft / rl / sft-diverse) and the RL update's
correctness on problems whose optimum is known."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from game.gp.cards import Rule  # noqa: E402
from models.prompts import gp_prompt  # noqa: E402
from models.train.pipeline import (OOD_MAPPING, PipelineConfig, base_mappings, mapped_prompt,  # noqa: E402
                                   mapping_pairs, paired)

ROOT = Path(__file__).resolve().parents[1]


def test_mapped_prompt_is_the_paper_template():
    cards = ["A", "J", "5", "K"]
    assert mapped_prompt(cards, (11, 12, 13)) == gp_prompt(cards, Rule.FACE_JQK)
    assert mapped_prompt(cards, (10, 10, 10)) == gp_prompt(cards, Rule.FACE10)
    assert "'7', '12', and '9' respectively" in mapped_prompt(cards, (7, 12, 9))


def test_base_corpus_never_states_the_ood_rule():
    maps = base_mappings()
    assert OOD_MAPPING not in maps and len(maps) == 8 ** 3 - 1
    pairs = mapping_pairs(300, 0, maps)
    ood_clause = "'11', '12', and '13' respectively"
    assert not any(ood_clause in p for p, _ in pairs)
    # the answers are graded correct under the stated mapping
    from game.gp.verifier import verify
    import re
    for prompt, answer in pairs[:50]:
        numbers = json.loads(re.search(r'"number": (\[[^\]]*\])', answer).group(1))
        assert verify(answer, numbers, target=24).terminated


def test_base_corpus_covers_every_token_of_the_ood_prompt():
    """The rule-OOD prompt is made only of tokens the base trains on (else OOD fails trivially)."""
    from models.train.data import ChatCodec
    from models.train.pipeline import build_tokenizer

    cfg = PipelineConfig.quick()
    codec = ChatCodec(build_tokenizer(cfg))
    seen = set()
    for p, a in mapping_pairs(400, 1, base_mappings()):
        seen.update(codec.encode_text(p + a))
    from game.gp.deal import evaluation_hands
    for deal in evaluation_hands("language_rule_ood", 20):
        ids = codec.encode_text(gp_prompt(deal.labels, Rule.FACE_JQK))
        assert set(ids) <= seen, [codec.tok.decode([i]) for i in set(ids) - seen]


def test_paired_difference():
    r = paired([1, 1, 0, 1], [0, 1, 0, 0])
    assert r["diff"] == 0.5 and r["n"] == 4 and r["se"] > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from models.tiny import build_tiny_llama
    from models.train.common import load_checkpoint

    path = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "m", hidden=32, layers=1, heads=2, kv_heads=1,
                            vocab_size=400, init_std=0.02, seed=0)
    return load_checkpoint(path)


def test_reply_logprobs_match_a_manual_forward(tiny):
    import torch

    from models.train.evaluate import Turn
    from models.train.grpo import reply_logprobs

    model, tok = tiny
    turns = [Turn(0, [5, 6, 7, 8], [9, 10], 0.0), Turn(1, [5, 6], [11, 12, 13], 0.0)]
    logp, mask = reply_logprobs(model, turns, tok.pad_token_id)
    for row, t in enumerate(turns):
        seq = torch.tensor([t.context + t.reply])
        with torch.no_grad():
            lsm = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
        manual = sum(float(lsm[len(t.context) - 1 + k, tok_id]) for k, tok_id in enumerate(t.reply))
        assert float((logp[row] * mask[row]).sum()) == pytest.approx(manual, abs=1e-4)
        assert int(mask[row].sum()) == len(t.reply)


def test_grpo_update_solves_a_one_token_bandit(tiny):
    """A problem with a known optimum: reward 1 when the single sampled token is in a fixed set of
    5 (of ~400), else 0. Starting near chance (~1 %), GRPO (group advantages, clipped ratio,
    the episode-weighted loss) must drive the success rate above 90 %."""
    import copy
    import random

    import torch

    from models.train.data import ChatCodec
    from models.train.evaluate import Turn, generate_batch
    from models.train.grpo import GRPOConfig, group_advantages, policy_update, reply_logprobs

    model, tok = tiny
    model = copy.deepcopy(model)
    codec = ChatCodec(tok)
    torch.manual_seed(0)
    random.seed(0)
    context = codec.prompt_ids("pick")
    good = set(range(100, 105))
    cfg = GRPOConfig(lr=3e-2, epochs=2, minibatch_turns=64, group_size=16)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rates = []
    for _ in range(30):
        model.eval()
        gens = generate_batch(model, codec, [context] * 64, max_new_tokens=1, temperature=1.0, top_p=1.0)
        rewards = [1.0 if g.ids and g.ids[0] in good else 0.0 for g in gens]
        rates.append(sum(rewards) / len(rewards))
        turns = [Turn(i, context, g.ids[:1], r) for i, (g, r) in enumerate(zip(gens, rewards))]
        adv = group_advantages(rewards, cfg.group_size, cfg.adv_eps)
        with torch.no_grad():
            old = [reply_logprobs(model, turns, codec.pad_id)[0]]
        model.train()
        policy_update(model, opt, turns, adv, old, cfg, codec.pad_id)
    assert rates[0] < 0.2
    assert sum(rates[-3:]) / 3 > 0.9, rates


def test_grpo_update_moves_probability_towards_the_better_reply(tiny):
    """One update with advantages +1 / −1 raises the log-prob of the first reply, lowers the second."""
    import copy

    import torch

    from models.train.data import ChatCodec
    from models.train.evaluate import Turn
    from models.train.grpo import GRPOConfig, policy_update, reply_logprobs

    model, tok = tiny
    model = copy.deepcopy(model)
    codec = ChatCodec(tok)
    ctx = codec.prompt_ids("choose")
    turns = [Turn(0, ctx, [50, 51, 52], 1.0), Turn(1, ctx, [60, 61, 62], 0.0)]
    cfg = GRPOConfig(lr=1e-3, epochs=1)
    with torch.no_grad():
        before, mask = reply_logprobs(model, turns, codec.pad_id)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    policy_update(model, opt, turns, [1.0, -1.0], [before], cfg, codec.pad_id)
    with torch.no_grad():
        after, _ = reply_logprobs(model, turns, codec.pad_id)
    gain = ((after - before) * mask).sum(1)
    assert gain[0] > 0 > gain[1]


def test_train_pipeline_quick_end_to_end(tmp_path):
    """`sftvsrl train pipeline --quick` trains all five stages and writes findings.json."""
    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "train", "pipeline", "--quick", "--out", str(out),
                           "--no-progress", "--threads", "1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("base", "init", "sft", "rl", "sft-diverse"):
        rec = json.loads((out / stage / "training.json").read_text())
        assert rec["compute"]["flops"] > 0
    findings = json.loads((out / "findings.json").read_text())
    assert set(findings["table"]) == {"base", "init", "sft", "rl", "sft-diverse"}
    assert "rl_minus_sft" in findings["paired"]
    assert findings["curves"]["sft"] and findings["curves"]["rl"]
    assert "rule-ood" in proc.stdout  # the protocol's split names
    # the final table's episodes ship next to findings.json and import into a store as one run
    # whose per-stage, per-split success reproduces the table (the Findings view's links)
    from app import findings as fd
    from app.evaluation import summarize
    from app.store import Store

    assert (out / "episodes.jsonl.gz").is_file()
    (tmp_path / "shipped" / "gp-l").mkdir(parents=True)
    for name in ("findings.json", "episodes.jsonl.gz"):
        (tmp_path / "shipped" / "gp-l" / name).write_bytes((out / name).read_bytes())
    f = fd.load("gp-l", tmp_path / "shipped")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = fd.import_episodes(store, f)
    assert result.written and result.mismatches == 0
    summary = summarize(store, result.run_id)
    for stage, row in findings["table"].items():
        for split in ("id", "rule-ood"):
            assert summary["metrics"][stage][split]["episodes"] == row[split]["n"]
            assert summary["metrics"][stage][split]["success_rate"] == pytest.approx(row[split]["success"])
    store.close()
    # resumable: a second run keeps the trained stages
    again = subprocess.run([sys.executable, "-m", "app.cli", "train", "pipeline", "--quick", "--out", str(out),
                            "--no-progress", "--no-eval"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# V-IRL-L: the synthetic training cities and the pipeline's corpora


def test_paired_ratio_difference_is_the_pooled_per_step_difference():
    from game.protocol import paired_ratio_difference

    a, b = [[3, 4], [2, 2], [0, 3]], [[1, 4], [2, 3], [1, 3]]
    r = paired_ratio_difference(a, b)
    assert r["diff"] == pytest.approx(5 / 9 - 4 / 10) and r["n"] == 3 and r["se"] > 0
    same = paired_ratio_difference(a, a)
    assert same["diff"] == 0 and same["se"] == 0
    with pytest.raises(ValueError):
        paired_ratio_difference(a, b[:2])


def _text(prompt) -> str:
    """A pipeline pair's prompt as text: the prompt itself, or every turn of a revision chat."""
    from models.chat import flatten_text

    return prompt if isinstance(prompt, str) else "\n".join(flatten_text(m) for m in prompt)


_LANDMARK = r"(?:where (?:The destination )?|O_\d+: (?:The destination )?|\"current observation\": \"(?:The destination )?)(.+?) is on your "


def _landmarks(text: str) -> set[str]:
    """Every place name a V-IRL prompt or reply mentions (instruction sentences, observations)."""
    import re

    return set(re.findall(_LANDMARK, text))


@pytest.fixture(scope="module")
def virl_base():
    """The quick V-IRL-L base corpus (two towns), its pipeline config and tokenizer."""
    from models.train.pipeline import build_tokenizer
    from models.train.tasks import training_task

    cfg = PipelineConfig.for_task("virl-l", quick=True)
    return cfg, training_task("virl-l").stage_pairs("base", 400, 0, cfg), build_tokenizer(cfg)


def test_training_cities_share_no_place_with_helsinki():
    """The base's towns are transformed Helsinki graphs and generated grids, every name drawn
    afresh: no place or street name of the evaluation map, and no name shared between two towns
    beyond chance; bearings are rotated, so compass words change, and both turn patterns occur."""
    from game.virl.cities import N_CITIES, city_kind, city_transform, training_city
    from game.virl.names import helsinki_names

    helsinki = {n.casefold() for n in helsinki_names()}
    towns = [training_city(0), training_city(1)]
    assert [city_kind(0), city_kind(1)] == ["helsinki", "grid"] and N_CITIES >= 64
    names = []
    for city in towns:
        assert len(city.routes) > 200
        places = {p.name for p in city.features.places}
        assert not {n.casefold() for n in places} & helsinki
        assert not {s.name.casefold() for s in city.features.streets} & helsinki
        seen = {m.landmark.split(" is on your")[0].removeprefix("The destination ") for r in city.routes
                for m in r.milestones}
        assert len(seen) > 100 and not {n.casefold() for n in seen} & helsinki
        names.append(places)
    assert len(names[0] & names[1]) < 0.05 * len(names[0])        # fresh per town (a few common words recur)
    assert all(20 <= city_transform(i)[0] <= 340 for i in range(0, N_CITIES, 2))
    assert {city_transform(i)[1] for i in range(0, N_CITIES, 2)} == {True, False}


def test_fresh_names_never_collide_with_helsinki():
    """The name generator never returns a Helsinki name, nor a distinctive word of one, and its
    names have the shapes real signs have (several words, punctuation, accents, acronyms)."""
    from game.virl.names import NameGenerator, TYPE_WORDS, helsinki_names

    avoid = helsinki_names()
    gen = NameGenerator(7, avoid=avoid)
    kinds = [*TYPE_WORDS, "tourism:artwork", "shop:hairdresser"]
    names = [gen.place(kinds[i % len(kinds)]) for i in range(4000)] + [gen.street() for _ in range(300)]
    assert len(set(names)) == len(names)
    assert not {n.casefold() for n in names} & {a.casefold() for a in avoid}
    words = {w.strip("!.'()").casefold() for n in names for w in n.replace("-", " ").split()}
    assert not words & gen.avoid_words
    assert sum(" " in n for n in names) > 1000 and sum(any(c in n for c in "äöåéè") for n in names) > 200
    assert any("&" in n for n in names) and any("'s" in n for n in names) and any(n.isupper() for n in names)
    assert NameGenerator(7, avoid=avoid).place("cafe") == NameGenerator(7, avoid=avoid).place("cafe")


def test_virl_base_corpus_never_shows_the_rule_ood_configuration(virl_base):
    """The V-IRL-L base walks the synthetic towns under both action spaces and never a Helsinki
    route (no Helsinki place name anywhere: ID routes, held-out streets, hence never a relative-
    action Helsinki prompt); Init/SFT data are Helsinki ID routes with absolute actions only; the
    SFT-diverse corpus's relative-action prompts are all other-town ones; every token of a rule-OOD
    prompt that its ID twin lacks (the relative action-space line) occurs in the base corpus."""
    from game.tasks import get_task, open_session
    from game.virl.names import helsinki_names
    from models.train.data import ChatCodec
    from models.train.tasks import training_task

    cfg, base, tok = virl_base
    task = training_task("virl-l")
    ids = task.stage_pairs("id", 200, 0, cfg)
    diverse = task.stage_pairs("diverse", 200, 0, cfg)
    relative = "x could be any following ['left', 'right', 'slightly left', 'slightly right']"
    assert sum(relative in _text(p) for p, _ in base) > 50 and sum(relative not in _text(p) for p, _ in base) > 50
    assert not any(relative in p for p, _ in ids)
    helsinki = {n.casefold() for n in helsinki_names()}
    for p, a in base + [pair for pair in diverse if relative in _text(pair[0])]:
        found = _landmarks(_text(p) + a)
        assert found and not {n.casefold() for n in found} & helsinki, found
    assert _landmarks("".join(p for p, _ in ids)) <= set(helsinki_names())   # the check sees Helsinki names
    spec = get_task("virl-l")
    for split in ("rule-ood", "streets"):
        instructions = {open_session(x).describe()["instruction"] for x in spec.instances(split, n=48)}
        assert not any(text in _text(p) for p, _ in base + diverse for text in instructions)
    codec = ChatCodec(tok)
    seen = set()
    for p, a in base:
        seen.update(codec.sft_example(p, a)[0])
    # what a rule-OOD prompt adds to the ID prompt of the same episode (the action-space line) is
    # made of tokens the base trained on
    for x, y in zip(spec.instances("rule-ood", n=20), spec.instances("id", n=20)):
        extra = set(codec.encode_text(open_session(x).prompt())) - set(codec.encode_text(open_session(y).prompt()))
        assert extra and extra <= seen, [codec.tok.decode([i]) for i in extra - seen]


def test_virl_tokenizer_splits_unseen_names_into_trained_pieces(virl_base):
    """The tokenizer is trained on the base corpus only (never a Helsinki prompt), so an evaluation
    name is split into ordinary pieces the base trained on, not whole-name tokens it never saw."""
    from collections import Counter

    from game.tasks import get_task, open_session
    from game.virl.names import helsinki_names
    from models.train.data import ChatCodec
    from models.train.tasks import training_task

    cfg, base, tok = virl_base
    text = " ".join(training_task("virl-l").pipeline_tokenizer_text(cfg))
    assert not _landmarks(text) & set(helsinki_names())
    codec = ChatCodec(tok)
    counts: Counter = Counter()
    for p, a in base:
        counts.update(codec.sft_example(p, a)[0])
    total = rare = 0
    for x in get_task("virl-l").instances("id", n=30):
        session = open_session(x)
        ids = codec.chat_ids([{"role": "user", "content": [{"type": "text", "text": session.prompt()}]}])
        ids += codec.encode_text(session.episode.oracle_reply())
        total += len(ids)
        rare += sum(counts[i] < 3 for i in ids)
    assert rare < 0.02 * total, (rare, total)       # the quick corpus (2 towns); the full one: < 1 %
    vocab = {t.strip() for t in (codec.tok.convert_tokens_to_string([v]) for v in codec.tok.get_vocab())}
    long_names = {n for n in helsinki_names() if len(n) >= 6 and " " not in n}
    assert not vocab & long_names, vocab & long_names


def test_virl_revision_examples_are_the_episode_flow(virl_base):
    """A quarter of the base's pairs are revision chats exactly as an evaluation builds them: the
    prompt, a wrong reply the verifier grades below +1, the verifier's own feedback turn, and the
    golden reply as the answer."""
    from game.virl.verifier import VERIFY_AT_INTERSECTION, VERIFY_NOT_AT_INTERSECTION, VERIFY_WRONG_ACTION
    from models.chat import Conversation
    from models.prompts import feedback_text

    _, base, _ = virl_base
    chats = [(p, a) for p, a in base if isinstance(p, list)]
    assert 0.15 * len(base) < len(chats) < 0.4 * len(base)
    feedback = {feedback_text(m) for m in (VERIFY_WRONG_ACTION, VERIFY_NOT_AT_INTERSECTION, VERIFY_AT_INTERSECTION)}
    for chat, answer in chats:
        assert [m["role"] for m in chat] == ["user", "assistant", "user"]
        prompt, wrong, turn = (m["content"][-1]["text"] for m in chat)
        assert turn in feedback and wrong != answer
        conv = Conversation()
        conv.messages_for(prompt)
        conv.record(wrong, turn.removeprefix("You failed this trial because "))
        assert conv.messages_for(prompt) == chat
    # single-turn pairs follow one another along each episode; revision answers are golden replies
    assert all('"action": "' in a for _, a in chats)
