"""The training code outside the staged pipeline's own tests: `sftvsrl train rl --quick` (the
pipeline's GRPO from any checkpoint) end to end through the CLI, the result loaded by the `local`
backend and graded by the verifier; the SFT loop's seeding; GP-L expert answers, the pipeline's
compact tokenizer and the verifier's feedback texts; GRPO's group advantages; a shipped checkpoint
solving a hand."""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from app.cli import main  # noqa: E402
from game.gp.cards import Rule  # noqa: E402
from game.gp.deal import Deal, DealConfig, Dealer  # noqa: E402
from game.gp.verifier import verify  # noqa: E402
from models.prompts import gp_prompt, response_eqn  # noqa: E402
from models.train.data import expert_answer, expert_formula  # noqa: E402
from models.train.grpo import group_advantages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_rl(tmp_path_factory, tiny_llama_dir):
    """`sftvsrl train rl --task gp-l --quick --init <a tiny random checkpoint>`."""
    out = tmp_path_factory.mktemp("train") / "rl"
    assert main(["train", "rl", "--task", "gp-l", "--quick", "--init", str(tiny_llama_dir), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_quick_rl_writes_an_hf_checkpoint_with_the_pipelines_rl_config(quick_rl, tiny_llama_dir):
    from models.train.config import rl_config

    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (quick_rl / name).is_file(), name
    record = json.loads((quick_rl / "training.json").read_text())
    assert record["kind"] == "rl" and record["task"] == "gp-l" and record["algorithm"] == "grpo"
    assert record["init"] == str(tiny_llama_dir)
    assert record["config"] == json.loads(json.dumps(asdict(rl_config("gp-l", quick=True))))
    assert record["updates"] == 2 and record["calls"] >= record["episodes"]


def test_quick_rl_checkpoint_answers_through_local_backend(quick_rl):
    from models.backends.local import LocalBackend
    from models.chat import gp_chat
    from models.decoding import DecodingSettings

    backend = LocalBackend(name="tiny-rl", path=str(quick_rl))
    cards = ["K", "5", "10", "A"]
    done = asyncio.run(backend.complete(gp_chat(gp_prompt(cards, Rule.FACE10)), (),
                                        DecodingSettings(max_tokens=40, temperature=0.0)))
    assert done.error is None and done.completion_tokens > 0
    verdict = verify(done.text, Deal.from_labels(cards).numbers(Rule.FACE10))
    assert verdict.verify_info.endswith(".")  # graded (whatever a seconds-old model says)


def test_sft_loop_is_seeded(tiny_llama_dir):
    """The one SFT loop (`fit` over `TextBatches`) is a function of its seed: the same data order,
    losses and weights."""
    from models.train.common import load_checkpoint, setup_torch
    from models.train.data import ChatCodec
    from models.train.gp_corpus import id_examples
    from models.train.sft import TextBatches, fit

    pairs = id_examples(32, 3)
    runs = []
    for _ in range(2):
        setup_torch(3, 1)
        model, tok = load_checkpoint(tiny_llama_dir)
        batches = TextBatches.from_pairs(ChatCodec(tok), pairs, 8, 3)
        losses = fit(model, batches, steps=len(batches), lr=3e-3, warmup_steps=1, min_lr_ratio=0.1,
                     weight_decay=0.01, grad_clip=1.0, desc="sft", progress=False)
        runs.append((losses, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    (a, weights_a), (b, weights_b) = runs
    assert len(a) == 4 and a == b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_expert_answers_are_canonical_and_graded_correct():
    # one formula per value multiset, whatever the dealing order
    assert expert_formula([10, 5, 10, 1]) == expert_formula([1, 10, 5, 10])
    dealer, checked = Dealer(7, DealConfig(rule=Rule.FACE10)), 0
    while checked < 40:
        deal = dealer.next()
        answer = expert_answer(deal)
        if answer is None:  # e.g. [3, 3, 8, 8]: no formula passes the float check
            continue
        verdict = verify(answer, deal.numbers(Rule.FACE10))
        assert verdict.reward == 5.0 and answer.startswith("\n{\n  \"cards\": ")
        assert "=24\"," in answer
        checked += 1
    # no float-exact solution: no expert answer (the paper's [3, 3, 8, 8] case)
    assert expert_answer(Deal.from_labels(["3", "3", "8", "8"])) is None


def test_answer_layout_is_response_eqn():
    deal = Deal.from_labels(["K", "5", "10", "A"])
    answer = expert_answer(deal)
    formula = expert_formula([10, 5, 10, 1])
    assert answer == response_eqn(["K", "5", "10", "A"], [10, 5, 10, 1], formula)


def test_compact_tokenizer_keeps_cards_and_numbers_whole():
    """The GP-L pipeline's tokenizer (`build_tokenizer`: compact pre-split) keeps cards, numbers
    and the target as single pieces, and decodes what it encodes."""
    from models.train.pipeline import PipelineConfig, build_tokenizer

    tok = build_tokenizer(PipelineConfig.for_task("gp-l", quick=True))
    text = gp_prompt(["K", "5", "10", "A"], Rule.FACE10) + expert_answer(Deal.from_labels(["K", "5", "10", "A"]))
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    for piece in ("'K'", "'10'", "'A'", "24", "10"):
        assert piece in pieces
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert len(pieces) < 150


def test_tokenizer_corpus_feedback_comes_from_the_verifier():
    from models.train.data import _FEEDBACK_REPLIES, gp_feedback_messages

    msgs = gp_feedback_messages()
    assert len(set(msgs)) == len(msgs) == len(_FEEDBACK_REPLIES) + 1 and msgs[-1] == "step_limit_reached"
    kinds = {verify(f'"formula": "{f}"', list(n)).outcome.value for n, f in _FEEDBACK_REPLIES}
    assert kinds == {"correct", "partial", "illegal_formula", "wrong_value", "wrong_numbers"}
    assert "your formula does not match any solution." in msgs      # the first token already off


def test_group_advantages():
    adv = group_advantages([5.0, -6.0, 5.0, 5.0], 2, 1e-4)
    assert adv[0] > 0 > adv[1] and adv[2] == adv[3] == 0.0


@pytest.mark.skipif(not (ROOT / "models" / "checkpoints" / "gp-l-sft" / "config.json").is_file(),
                    reason="shipped checkpoint not present")
def test_shipped_sft_checkpoint_solves_a_hand():
    from models.train.common import load_checkpoint
    from models.train.evaluate import evaluate_gp

    model, tok = load_checkpoint(ROOT / "models" / "checkpoints" / "gp-l-sft")
    result = evaluate_gp(model, tok, "id", 8, temperature=0)
    assert result["success"] > 0 and result["episodes"] == len(result["successes"]) == 8
