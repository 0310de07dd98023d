"""GP-L's staged-pipeline corpora and the `reworded` control split: the base states the rule in many
phrasings (never a held-out one, never the OOD rule), revision examples carry the verifier's exact
feedback in the episode's own chat, and no training stream deals a held-out evaluation hand."""
from __future__ import annotations

import json
import random
import re

import pytest

from game import protocol
from game.gp.phrasings import REWORDED, read_phrasings
from game.prompts import FACE_CARD_MSG, gp_prompt
from game.gp.cards import Rule
from game.tasks import Instance, InstanceError, get_task, open_session
from game.tasks.gp import EVAL_HAND_POOL, evaluation_multisets, is_evaluation_hand

pytest.importorskip("torch")

from models.train.gp_corpus import base_examples, diverse_examples, id_examples
from models.train.rules_text import OOD_MAPPING, clause, is_reserved

OOD_SENTENCE = FACE_CARD_MSG[Rule.FACE_JQK]


@pytest.fixture(scope="module")
def corpora():
    return {"base": base_examples(1500, 0), "id": id_examples(300, 0, revision=0.5),
            "diverse": diverse_examples(400, 0)}


def _texts(examples):
    for ex in examples:
        yield ex.prompt
        yield ex.answer
        for reply, info in ex.history:
            yield reply
            yield info


def test_reworded_split_is_the_id_hands_and_rule_in_held_out_words():
    spec = get_task("gp-l")
    assert "reworded" in spec.split_names
    ids, words = spec.instances("id", 30), spec.instances("reworded", 30)
    assert [x.params["deal_id"] for x in ids] == [x.params["deal_id"] for x in words]   # paired on the same hands
    for i, x in enumerate(words):
        assert x.params["rule"] == "face10" and x.params["rule_text"] == REWORDED[i % len(REWORDED)]
        prompt = open_session(x).prompt()
        assert prompt.count(x.params["rule_text"]) == 2 and FACE_CARD_MSG[Rule.FACE10] not in prompt
        assert x.key != ids[i].key
    # graded under the ID rule: K is 10
    s = open_session(words[0])
    assert s.describe()["numbers"] == open_session(ids[0]).describe()["numbers"]


def test_researchers_phrasings_replace_the_held_out_ones(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my wordings\nJ, Q and K are ten each.\n\nface cards: 10\n", encoding="utf-8")
    mine = read_phrasings(path)
    assert mine == ("J, Q and K are ten each.", "face cards: 10")
    xs = protocol.instances("gp-l", "reworded", 4, phrasings=mine)
    assert [x.params["rule_text"] for x in xs] == list(mine) * 2
    with pytest.raises(InstanceError, match="reworded"):
        protocol.instances("gp-l", "id", 4, phrasings=mine)
    (tmp_path / "long.txt").write_text("x" * 400, encoding="utf-8")
    with pytest.raises(ValueError, match="at most"):
        read_phrasings(tmp_path / "long.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no phrasing"):
        read_phrasings(tmp_path / "empty.txt")
    with pytest.raises(InstanceError):
        Instance("gp-l", {"deal_id": "HKC5D2C4", "rule_text": "y" * 301})


def test_held_out_phrasings_use_only_reserved_constructions():
    """Every held-out clause contains a reserved construction, so a training clause (which never
    contains one) can never be one of them."""
    for text in REWORDED:
        assert is_reserved(text), text
    rng = random.Random(0)
    for _ in range(3000):
        mapping = rng.choice([(10, 10, 10), (7, 9, 12), (8, 8, 3), (13, 13, 13)])
        assert not is_reserved(clause(mapping, rng))
    with pytest.raises(ValueError):
        clause(OOD_MAPPING, rng)


def test_no_training_stream_states_a_reworded_phrasing_or_the_ood_rule(corpora):
    from models.train.pipeline import PipelineConfig
    from models.train.tasks import training_task

    texts = [t for name in corpora for t in _texts(corpora[name])]
    texts += training_task("gp-l").pipeline_tokenizer_text(PipelineConfig.for_task("gp-l", quick=True))
    low = [t.lower() for t in texts]
    for phrase in REWORDED:
        assert not any(phrase.lower() in t for t in low), phrase
    prompts = [ex.prompt for name in corpora for ex in corpora[name]]
    for p in prompts:
        clause_text = p.split("Note that ", 1)[1].split(", and each card must be used once.")[0]
        assert not is_reserved(clause_text), clause_text
        assert OOD_SENTENCE not in p
    # the paper's ID sentence is a regular share of the base, and many other phrasings too
    base = [ex.prompt for ex in corpora["base"]]
    share = sum(FACE_CARD_MSG[Rule.FACE10] in p for p in base) / len(base)
    assert 0.05 < share < 0.3
    assert len({p.split("Note that ", 1)[1].split(", and each")[0] for p in base}) > 0.6 * len(base)


def test_no_training_stream_deals_an_evaluation_hand(corpora):
    """The card multisets of the first `EVAL_HAND_POOL` hands of every GP split are held out of every
    training stream: the base, Init/SFT, SFT-diverse and GRPO's rollout and validation hands."""
    held = evaluation_multisets()
    spec = get_task("gp-l")
    for split in spec.split_names:
        for x in spec.instances(split, 50):
            assert is_evaluation_hand(open_session(x).describe()["cards"])
    assert len(held) > 600
    overlap = 0
    for examples in corpora.values():
        for ex in examples:
            labels = re.search(r"Cards: (\[.*?\])", ex.prompt).group(1)
            overlap += is_evaluation_hand(json.loads(labels.replace("'", '"')))
    for task in ("gp-l", "gp-vl"):
        for x in get_task(task).training_instances(300, seed=2000):
            overlap += is_evaluation_hand(open_session(x).describe()["cards"])
    assert overlap == 0
    assert EVAL_HAND_POOL >= 234


def test_revision_examples_are_the_episode_chat_with_the_verifiers_feedback(corpora):
    """A revision example's failed tries, replayed in a real episode of the same hand, get exactly
    the feedback the example shows, and the example's tokens are the chat the evaluation sends."""
    from models.chat import Conversation
    from models.train.data import ChatCodec
    from models.tiny import build_tiny_llama, default_corpus
    from models.train.common import load_checkpoint

    revisions = [ex for ex in corpora["id"] if ex.history]
    assert len(revisions) > 50
    assert {len(ex.history) for ex in revisions} >= {1, 2, 3}
    kinds = {info.split(":")[0].split(" is partially")[0] for ex in revisions for _, info in ex.history}
    assert "your formula does not match any solution." in kinds or any("partially" in i for ex in revisions
                                                                        for _, i in ex.history)
    codec = None
    for ex in revisions[:40]:
        labels = json.loads(re.search(r"Cards: (\[.*?\])", ex.prompt).group(1).replace("'", '"'))
        deal = next(d for d in _deals_with(labels))
        session = open_session(Instance("gp-l", {"deal_id": deal}))
        assert session.prompt() == ex.prompt
        conv = Conversation()
        for reply, info in ex.history:
            conv.messages_for(session.prompt())
            result = session.step(reply)
            assert result.feedback == info and result.reward < 5
            conv.record(reply, result.feedback)
        if codec is None:
            import tempfile
            from pathlib import Path
            with tempfile.TemporaryDirectory() as tmp:
                codec = ChatCodec(load_checkpoint(build_tiny_llama(Path(tmp) / "m", default_corpus(50)))[1])
        ids, labels_ = codec.sft_example(ex.prompt, ex.answer, history=ex.history)
        context = codec.chat_ids(conv.messages_for(session.prompt()))
        assert ids[:len(context)] == context and all(y == -100 for y in labels_[:len(context)])
        assert session.step(ex.answer).reward == 5


def _deals_with(labels):
    """Deal ids whose cards have these labels in this order (suits are not shown in GP-L)."""
    yield "".join(suit + lab for suit, lab in zip("SHDC", labels))


def test_base_answers_are_right_under_the_stated_mapping(corpora):
    from game.gp.verifier import verify

    for ex in corpora["base"][:300]:
        numbers = json.loads(re.search(r'"number": (\[[^\]]*\])', ex.answer).group(1))
        assert verify(ex.answer, numbers, target=24).terminated
    assert any(ex.history for ex in corpora["base"])
    assert not any(ex.history for ex in corpora["diverse"])


def test_base_corpus_covers_every_token_of_the_ood_prompt():
    """The rule-OOD prompt is made only of tokens the base trains on (else OOD fails trivially)."""
    from game.gp.deal import evaluation_hands
    from models.train.data import ChatCodec
    from models.train.pipeline import PipelineConfig, build_tokenizer

    codec = ChatCodec(build_tokenizer(PipelineConfig.for_task("gp-l", quick=True)))
    seen = set()
    for ex in base_examples(600, 1):
        seen.update(codec.encode_text(ex.prompt + ex.answer))
    for deal in evaluation_hands("language_rule_ood", 20):
        ids = codec.encode_text(gp_prompt(deal.labels, Rule.FACE_JQK))
        assert set(ids) <= seen, [codec.tok.decode([i]) for i in set(ids) - seen]
