"""The staged tiny-model pipeline (base → init → sft / rl / sft-diverse, several seeds, every lens)
end to end, and V-IRL-L's synthetic training cities and corpora. (GRPO's update: test_grpo.py;
GP-L's corpora: test_gp_corpus.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from models.train.pipeline import PipelineConfig, paired

ROOT = Path(__file__).resolve().parents[1]


def test_paired_difference():
    r = paired([1, 1, 0, 1], [0, 1, 0, 0])
    assert r["diff"] == 0.5 and r["n"] == 4 and r["se"] > 0


def test_train_pipeline_quick_end_to_end(tmp_path):
    """`sftvsrl train pipeline --quick` trains all five stages and writes findings.json."""
    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "train", "pipeline", "--quick", "--out", str(out),
                           "--no-progress", "--threads", "1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from models.train.pipeline import stage_dir

    cfg = PipelineConfig.for_task("gp-l", quick=True)
    for stage in ("base", "init", "sft-diverse"):
        assert json.loads((stage_dir(out, stage) / "training.json").read_text())["compute"]["flops"] > 0
    for seed in cfg.seeds:
        for stage in ("sft", "rl"):
            rec = json.loads((stage_dir(out, stage, seed) / "training.json").read_text())
            assert rec["seed"] == seed and rec["compute"]["flops"] > 0 and rec["snapshots"]
    findings = json.loads((out / "findings.json").read_text())
    assert findings["format"] == 2 and findings["seeds"] == list(cfg.seeds)
    assert set(findings["table"]) == {"base", "init", "sft", "rl", "sft-matched", "sft-diverse"}
    assert set(findings["splits"]) == {"id", "rule-ood", "reworded"}
    for lens in ("final", "matched_compute", "matched_id", "matched_kl"):
        agg = findings["lenses"][lens]["rule-ood"]
        assert agg["seeds"] == len(cfg.seeds) and len(agg["per_seed"]) == len(cfg.seeds)
    assert set(findings["seed_table"]["rl"]["id"]["values"]) == {str(s) for s in cfg.seeds}
    assert findings["curves"][str(cfg.seeds[0])]["sft"] and findings["curves"][str(cfg.seeds[0])]["rl"]
    assert "rl_minus_sft" in findings["paired"] and "rl_minus_sft_matched" in findings["paired"]
    assert "rule-ood" in proc.stdout  # the protocol's split names
    # the model cards say what each stage saw
    assert "Never saw" in (stage_dir(out, "rl", cfg.seeds[0]) / "README.md").read_text()
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
        for split in findings["splits"]:
            assert summary["metrics"][stage][split]["episodes"] == row[split]["n"]
            assert summary["metrics"][stage][split]["success_rate"] == pytest.approx(row[split]["success"])
    store.close()
    # resumable: a second run keeps the trained stages
    again = subprocess.run([sys.executable, "-m", "app.cli", "train", "pipeline", "--quick", "--out", str(out),
                            "--no-progress", "--no-eval"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    # every scored checkpoint is cached: evaluating again reads the cache and gives the same file
    from models.train.pipeline import evaluate_pipeline

    cached = {p: p.stat().st_mtime_ns for p in (out / "eval-cache").glob("*.json.gz")}
    assert cached
    second = evaluate_pipeline(out, cfg, progress=False)
    assert json.loads(json.dumps(second["table"])) == findings["table"]
    assert json.loads(json.dumps(second["lenses"])) == findings["lenses"]
    assert {p: p.stat().st_mtime_ns for p in (out / "eval-cache").glob("*.json.gz")} == cached
    # shipping copies exactly what the table measured, with the model cards, and the findings
    from models.train.pipeline import ship_pipeline, stage_path

    shipped = ship_pipeline(out, tmp_path / "ckpt")
    assert sorted(p.name for p in shipped) == sorted(f"gp-l-{s}" for s in findings["table"])
    for stage in findings["table"]:
        folder = tmp_path / "ckpt" / f"gp-l-{stage}"
        assert (folder / "model.safetensors").read_bytes() == \
            (stage_path(out, findings, stage) / "model.safetensors").read_bytes()
        assert (folder / "README.md").is_file() and (folder / "training.json").is_file()
    assert fd.load("gp-l", tmp_path / "ckpt" / "findings") is not None


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


def test_later_stages_start_from_the_chosen_base_snapshot(tmp_path):
    from models.train.pipeline import base_dir, base_snapshot_steps

    cfg = PipelineConfig.quick().with_changes(base_steps=40)
    assert base_snapshot_steps(cfg) == [10, 20, 30] and base_dir(tmp_path, cfg) == tmp_path / "base"
    early = cfg.with_changes(base_snapshot=7)
    assert base_snapshot_steps(early) == [7, 10, 20, 30]
    assert base_dir(tmp_path, early) == tmp_path / "base-snapshots" / "step-00007"
    # the recorded config round-trips, so the table's base row is the snapshot Init started from
    assert PipelineConfig.from_dict(json.loads(json.dumps(__import__("dataclasses").asdict(early)))) == early
    with pytest.raises(ValueError, match="base_snapshot must be a step between 1 and 39"):
        base_snapshot_steps(cfg.with_changes(base_snapshot=40))


def test_base_prompt_loss_labels_the_prompt_tokens_too(virl_base):
    """`base_prompt_loss` (off by default, so every recorded config trains as before; V-IRL-L's
    preset turns it on) makes the base a language model of the whole example: the prompt's tokens
    become labels, past the prefix every example shares."""
    from models.train.data import ChatCodec
    from models.train.sft import TextBatches

    cfg, base, tok = virl_base
    codec = ChatCodec(tok)
    prompt, answer = next(p for p in base if isinstance(p[0], str))
    ids, labels = codec.sft_example(prompt, answer)
    ids_all, labels_all = codec.sft_example(prompt, answer, prompt_loss=True)
    masked = labels.count(-100)
    assert ids_all == ids and labels_all == ids and masked > len(ids) // 2 and labels[masked:] == ids[masked:]
    assert PipelineConfig().base_prompt_loss is False and cfg.base_prompt_loss is True   # V-IRL-L's preset sets it
    assert cfg.with_changes(base_prompt_loss=False).sft_plan("base")["prompt_loss"] is False
    assert cfg.sft_plan("base")["prompt_loss"] is True

    def labelled(batches):
        return sum(t != -100 for chunk in batches.batches for _, y in chunk for t in y)

    pairs = [p for p in base if isinstance(p[0], str)][:8]
    answers_only, everything = (TextBatches.from_pairs(codec, pairs, 4, 0, prompt_loss=flag) for flag in (False, True))
    assert labelled(everything) > 3 * labelled(answers_only)


def test_untied_embeddings_are_a_model_option(tmp_path):
    """`tie_embeddings` (on by default: every recorded config builds what it built) off gives the
    model its own output layer, saved and loaded as such."""
    from models.tiny import build_tiny_llama
    from models.train.common import load_checkpoint

    assert PipelineConfig.quick().model_kwargs()["tie_embeddings"] is True
    cfg = PipelineConfig.quick().with_changes(tie_embeddings=False, hidden=16, layers=1, heads=1, kv_heads=1,
                                              intermediate=32)
    kwargs = {**cfg.model_kwargs(), "vocab_size": 300}
    for tie in (True, False):
        path = build_tiny_llama(tmp_path / f"tie-{tie}", corpus=["north east south west, turn left"] * 40,
                                **{**kwargs, "tie_embeddings": tie})
        model, _ = load_checkpoint(path)
        shared = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        assert shared is tie


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
