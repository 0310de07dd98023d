"""The tiny-checkpoint training code: `--quick` SFT then RL end to end through the CLI, the result
loaded by the `local` backend and graded by the verifier; data, tokenizer and GRPO pieces."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from app.cli import main  # noqa: E402
from game.gp.cards import Rule  # noqa: E402
from game.gp.deal import Deal  # noqa: E402
from game.gp.verifier import verify  # noqa: E402
from models.prompts import gp_prompt, response_eqn  # noqa: E402
from models.train.data import expert_answer, expert_formula, sft_pairs  # noqa: E402
from models.train.grpo import group_advantages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_pair(tmp_path_factory):
    """`sftvsrl train sft --quick` then `sftvsrl train rl --quick --init <sft>`."""
    base = tmp_path_factory.mktemp("train")
    sft, rl = base / "sft", base / "rl"
    assert main(["train", "sft", "--task", "gp-l", "--quick", "--out", str(sft), "--no-progress"]) == 0
    assert main(["train", "rl", "--task", "gp-l", "--quick", "--init", str(sft), "--out", str(rl), "--no-progress"]) == 0
    return sft, rl


def test_quick_sft_and_rl_write_hf_checkpoints(quick_pair):
    for path, kind in zip(quick_pair, ("sft", "rl")):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
            assert (path / name).is_file(), name
        record = json.loads((path / "training.json").read_text())
        assert record["kind"] == kind and record["task"] == "gp-l"
    rl = json.loads((quick_pair[1] / "training.json").read_text())
    assert rl["algorithm"] == "grpo" and rl["updates"] == 2 and rl["calls"] >= rl["episodes"]


def test_quick_rl_checkpoint_answers_through_local_backend(quick_pair):
    from models.backends.local import LocalBackend
    from models.chat import gp_chat
    from models.decoding import DecodingSettings

    backend = LocalBackend(name="tiny-rl", path=str(quick_pair[1]))
    cards = ["K", "5", "10", "A"]
    done = asyncio.run(backend.complete(gp_chat(gp_prompt(cards, Rule.FACE10)), (),
                                        DecodingSettings(max_tokens=40, temperature=0.0)))
    assert done.error is None and done.completion_tokens > 0
    verdict = verify(done.text, Deal.from_labels(cards).numbers(Rule.FACE10))
    assert verdict.verify_info.endswith(".")  # graded (whatever a seconds-old model says)


def test_sft_training_is_seeded(tmp_path):
    from models.train.sft import SFTConfig, train_sft

    a = train_sft(SFTConfig.quick(seed=3), tmp_path / "a", progress=False)
    b = train_sft(SFTConfig.quick(seed=3), tmp_path / "b", progress=False)
    assert a["loss_curve"] == b["loss_curve"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_expert_answers_are_canonical_and_graded_correct():
    # one formula per value multiset, whatever the dealing order
    assert expert_formula([10, 5, 10, 1]) == expert_formula([1, 10, 5, 10])
    for pair in sft_pairs(40, seed=7):
        assert pair.prompt == gp_prompt(pair.deal.labels, Rule.FACE10)
        verdict = verify(pair.answer, pair.deal.numbers(Rule.FACE10))
        assert verdict.reward == 5.0 and pair.answer.startswith("\n{\n  \"cards\": ")
        assert "=24\"," in pair.answer
    # no float-exact solution: no expert answer (the paper's [3, 3, 8, 8] case)
    assert expert_answer(Deal.from_labels(["3", "3", "8", "8"])) is None


def test_answer_layout_is_response_eqn():
    deal = Deal.from_labels(["K", "5", "10", "A"])
    answer = expert_answer(deal)
    formula = expert_formula([10, 5, 10, 1])
    assert answer == response_eqn(["K", "5", "10", "A"], [10, 5, 10, 1], formula)


def test_compact_tokenizer_keeps_cards_and_numbers_whole():
    from models.train.data import gp_corpus
    from models.tiny import train_tokenizer

    tok = train_tokenizer(gp_corpus(0, 120), 900, compact=True)
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


def test_evaluation_table_and_cards_come_from_the_protocol(quick_pair):
    """`train table`'s pieces: the protocol's splits and metrics per row, the paired comparison,
    and model cards that name the command that made the table."""
    from game import protocol
    from models.train.card import evaluation_table, table_markdown, write_cards, write_eval

    sft, rl = quick_pair
    table = evaluation_table(sft, rl, 3, progress=False, rows=("sft", "rl"))
    assert set(table) == {"sft", "rl"} and tuple(table["sft"]) == protocol.splits("gp-l") == ("id", "rule-ood", "reworded")
    row = table["rl"]["rule-ood"]
    assert row["episodes"] == len(row["successes"]) == 3 and row["task"] == "gp-l"
    assert row["first_instance"] == protocol.instances("gp-l", "rule-ood", 1)[0].key
    text = table_markdown(table)
    assert "| model | id success | id first-try | rule-ood success | rule-ood first-try |" in text
    assert "`rule-ood`, sft vs rl (n = 3)" in text and "sftvsrl train table --task gp-l" in text
    write_eval(table, sft, rl)
    write_cards(sft, rl)
    card = (rl / "README.md").read_text()
    assert "## Evaluation" in card and f"sftvsrl train table --task gp-l --sft {sft} --rl {rl} --n 3" in card
