"""The tiny vision-language checkpoints (`models.train.vision`, `models.tiny.build_tiny_mllama`):
the grafted Mllama reproduces its text model, the training inputs equal what the checkpoint's own
processor makes, and a `--quick` pipeline's checkpoints play GP-VL and V-IRL-VL through the `local`
backend exactly as the batched executor plays them."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from game import protocol  # noqa: E402
from game.tasks import open_session  # noqa: E402
from models.backends.local import LocalBackend  # noqa: E402
from models.chat import gp_chat, user_message  # noqa: E402
from models.decoding import DecodingSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEXT_BASE = REPO / "models" / "checkpoints" / "gp-vl-text"
GREEDY = DecodingSettings(max_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from models.train.pipeline import VisionConfig, evaluate_vision, train_vision

    torch.set_num_threads(1)
    cfg = VisionConfig.quick()
    root = tmp_path_factory.mktemp("vision") / "gp-vl"
    records = train_vision(cfg, root, progress=False)
    findings = evaluate_vision(root, cfg, progress=False)
    return root, records, findings


def test_graft_reproduces_the_text_model_until_the_gates_open(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM, MllamaForConditionalGeneration

    from models.prompts import gp_prompt
    from models.tiny import build_tiny_mllama

    path = build_tiny_mllama(tmp_path / "graft", text_from=TEXT_BASE, image_size=64, patch_size=16,
                             max_image_tiles=1, vision_hidden=32, vision_layers=1, cross_attention_layers=[1, 3],
                             gate=0.0)
    text = LlamaForCausalLM.from_pretrained(TEXT_BASE).eval()
    vl = MllamaForConditionalGeneration.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(TEXT_BASE)
    ids = tok(tok.apply_chat_template(gp_chat(gp_prompt(["K", "5", "10", "A"])), add_generation_prompt=True,
                                      tokenize=False), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(text(**ids).logits, vl(**ids).logits, atol=1e-5)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "mllama" and config["text_config"]["cross_attention_layers"] == [1, 3]
    assert (path / "processor_config.json").is_file() and (path / "chat_template.jinja").is_file()


def test_training_inputs_equal_the_processors(quick_run):
    """`vision_inputs` (cross-attention mask, pixels) and `TablePixels` (composed tables) give
    what `MllamaProcessor` gives for the real chat and the real 1200 x 1200 table."""
    from game.gp.cards import Card
    from game.gp.render import table_image
    from models.train.common import load_checkpoint
    from models.train.data import ChatCodec, vision_inputs
    from models.train.vision import TablePixels

    root, _, _ = quick_run
    _, proc = load_checkpoint(root / "sft")
    codec = ChatCodec(proc)
    session = open_session(protocol.instances("gp-vl", "visual-ood", 1)[0])
    chat = gp_chat(session.prompt(), image=True)
    want = proc(images=[session.image()], text=proc.apply_chat_template(chat, add_generation_prompt=True),
                add_special_tokens=False, return_tensors="pt")
    ids = codec.chat_ids(chat)
    assert ids == want["input_ids"][0].tolist()
    got = vision_inputs([codec.pixels(session.image())], [codec.image_position(ids)], len(ids))
    for key in ("cross_attention_mask", "aspect_ratio_ids", "aspect_ratio_mask"):
        assert torch.equal(got[key], want[key]), key
    assert torch.allclose(got["pixel_values"], want["pixel_values"])
    # left padding shifts the mask with the row
    padded = vision_inputs([codec.pixels(session.image())], [3 + codec.image_position(ids)], 3 + len(ids))
    assert torch.equal(padded["cross_attention_mask"][:, 3:], want["cross_attention_mask"])
    assert not padded["cross_attention_mask"][:, :3].any()
    slots = (Card(13, "H"), None, Card(10, "S"), Card(1, "D"))
    composed = TablePixels(codec)(slots)["pixel_values"]
    assert torch.allclose(composed, codec.pixels(table_image(slots))["pixel_values"], atol=1e-5)


def test_the_pixel_cache_keeps_no_image_alive(quick_run):
    """`ChatCodec.pixels` caches an image's tensors only while the image lives: it once kept the
    last 1,024 images alive, and full-resolution street-view grids (~17 MB each) took a V-IRL-VL
    GRPO run to 23 GB (OOM-killed). A live image still hits the cache."""
    import gc
    import weakref

    from PIL import Image

    from models.train.common import load_checkpoint
    from models.train.data import PIXEL_CACHE, ChatCodec

    root, _, _ = quick_run
    codec = ChatCodec(load_checkpoint(root / "sft")[1])
    kept = Image.new("RGB", (64, 48), (200, 30, 30))
    assert codec.pixels(kept) is codec.pixels(kept)            # a live image: one encoding
    gone = Image.new("RGB", (96, 96), (10, 120, 10))
    codec.pixels(gone)
    ref = weakref.ref(gone)
    del gone
    gc.collect()
    assert ref() is None and len(codec._pixels) == 1           # only the live image's entry is left
    images = [Image.new("RGB", (8, 8), (i % 256, 0, 0)) for i in range(PIXEL_CACHE + 3)]
    for im in images:
        codec.pixels(im)
    assert len(codec._pixels) == PIXEL_CACHE                   # bounded even while all live


def test_quick_pipeline_records_and_cards(quick_run):
    root, records, findings = quick_run
    assert set(records) == {"base", "init", "sft", "rl", "sft-diverse"}
    base = records["base"]
    assert base["example_kinds"].keys() <= {"read", "mapped"} and base["red_suit_examples"] > 0
    assert base["vision_pretraining"]["layouts"] == 3 * 4 and "vision_pretraining" in records["init"]
    assert records["init"]["vision_pretraining"] is None   # only the base pretrains the encoder
    assert records["init"]["example_kinds"] == {"id": records["init"]["examples"]}
    assert records["init"]["red_suit_examples"] == 0 and records["sft"]["red_suit_examples"] == 0
    assert records["rl"]["task"] == "gp-vl" and records["rl"]["kind"] == "rl"
    # SFT-diverse: varied stated mappings, black suits only (the visual-OOD configuration stays unseen)
    n = records["sft-diverse"]["examples"]
    assert records["sft-diverse"]["example_kinds"] == {"id": n // 2, "mapped": n - n // 2}
    assert records["sft-diverse"]["red_suit_examples"] == 0
    assert findings["metric"] == "success_rate"
    for stage in records:
        row = findings["table"][stage]
        assert set(row) == {"id", "rule-ood", "visual-ood", "compute"}
        for split in ("id", "rule-ood", "visual-ood"):
            cell = row[split]
            assert cell["n"] == 3 and 0.0 <= cell["recognition"] <= 1.0 and cell["steps"] >= 3
            assert cell["value"] == cell["success"] and cell["metric"] == "success_rate"
        card = (root / stage / "README.md").read_text()
        assert card.startswith(f"# gp-vl-{stage}") and "Never saw" in card and "| visual-ood |" in card
        assert "s wall on one CPU thread;" in card   # the record's own thread count (the quick run: 1)
    assert {"rl_minus_sft", "sft_minus_init", "sft_diverse_minus_sft"} <= set(findings["paired"])
    assert set(findings["paired_recognition"]) == set(findings["paired"])
    # every evaluated episode ships for the Findings view's links into Inspect, and replays the same
    from app import findings as fd

    f = fd.load("gp-vl", root.parent)
    assert f is not None and f.run_id is not None and f.splits == ["id", "rule-ood", "visual-ood"]
    episodes = list(fd.read_episodes(f.episodes_path))
    assert len(episodes) == 5 * 3 * 3
    for rec in episodes:
        from game.tasks import Instance

        _, success, _ = fd.replay(Instance.from_dict(rec["instance"]), rec["outputs"])
        assert success == rec["success"]


@pytest.mark.parametrize("task", ["gp-vl", "virl-vl"])
def test_local_backend_plays_the_trained_checkpoint_like_the_executor(quick_run, task):
    """The `local` backend loads the pipeline's checkpoint through its Mllama path and answers a
    vision prompt with its image; greedy, its reply equals the batched executor's."""
    from models.train.common import load_checkpoint
    from models.train.data import ChatCodec
    from models.train.evaluate import generate_batch

    root, _, _ = quick_run
    session = open_session(protocol.instances(task, "id", 1)[0])
    chat = [user_message(session.prompt(), image=True)]
    backend = LocalBackend(name="vl", path=str(root / "rl"))
    reply = asyncio.run(backend.complete(chat, [session.image()], GREEDY))
    assert reply.ok, reply.error
    assert reply.prompt_tokens > 50 and reply.completion_tokens > 0
    model, proc = load_checkpoint(root / "rl")
    codec = ChatCodec(proc)
    ours = generate_batch(model, codec, [codec.chat_ids(chat)], max_new_tokens=40, temperature=0,
                          pixels=[codec.pixels(session.image())])[0]
    assert ours.text == reply.text


def test_a_vision_task_refuses_a_text_checkpoint():
    from models.train.common import load_checkpoint
    from models.train.evaluate import evaluate

    model, tok = load_checkpoint(TEXT_BASE)
    with pytest.raises(ValueError, match="vision checkpoint"):
        evaluate(model, tok, "gp-vl", "id", 1)


def test_text_trainers_refuse_vision_tasks_but_grpo_plays_them():
    from models.train.tasks import training_task

    with pytest.raises(ValueError, match="gp-l"):
        training_task("gp-vl", "tiny SFT")
    entry = training_task("gp-vl", "tiny RL", vision=True)
    from models.train.grpo import GRPOConfig

    take = entry.rollouts(GRPOConfig(task="gp-vl"))
    first = take(2)
    assert [x.task for x in first] == ["gp-vl", "gp-vl"] and first[0].params["rule"] == "face10"


def test_findings_view_shows_vision_findings_with_recognition_and_the_papers_numbers(quick_run, tmp_path):
    """The Findings view draws GP-VL's evaluation like the text tasks' — bars on every split, the
    paper's rule-OOD and visual-OOD numbers beside them, a verdict per OOD split — plus the
    recognition table (paper §5.3)."""
    from types import SimpleNamespace

    from app import findings as fd
    from app.settings import Settings
    from app.store import Store
    from app.ui.findings_tab import view_html

    root, _, findings = quick_run
    f = fd.load("gp-vl", root.parent)
    assert set(fd.recognition_rows(f)) == {"base", "init", "sft", "rl", "sft-diverse"}
    assert fd.paper_bars("gp-vl", "visual-ood") == [("init", 0.236), ("sft", 0.137), ("rl", 0.412)]
    verdict = fd.verdict(f)
    assert "the flipped rule" in verdict and "red suits" in verdict   # one sentence per OOD split
    lines = fd.explanation(f)
    assert any(line.startswith("Seeing the cards") for line in lines)
    assert any("episode success on visual-OOD (red suits, J/Q/K = 10): Init 23.6 %" in line for line in lines)
    ctx = SimpleNamespace(settings=Settings(findings_dir=root.parent), store=Store(f"sqlite:///{tmp_path / 'db'}"))
    html = view_html(ctx, "gp-vl")
    assert 'data-task="gp-vl"' in html and 'id="findings-recognition"' in html
    assert 'data-testid="paper-rl-visual-ood"' in html and 'data-testid="bar-sft-diverse-visual-ood"' in html
    rl = findings["table"]["rl"]["visual-ood"]
    assert f"{100 * rl['recognition']:.1f} ± {100 * rl['recognition_se']:.1f} %" in html
