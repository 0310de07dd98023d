"""The vision path: a tiny random `MllamaForConditionalGeneration` (the paper checkpoints'
architecture) built by `models.tiny.build_tiny_mllama`, run by the `local` backend with images,
and served by our OpenAI-compatible server with images sent as base64 data URLs."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("torch")

from models.backends.local import LocalBackend
from models.backends.openai import OpenAIBackend
from models.chat import gp_chat
from models.decoding import DecodingSettings
from models.procs import our_server
from models.prompts import gp_prompt

GREEDY = DecodingSettings(max_tokens=12, temperature=0.0)
GREEN = np.full((1200, 1200, 3), (53, 101, 77), dtype=np.uint8)
NOISE = np.random.RandomState(0).randint(0, 255, (1200, 1200, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mllama_dir(tmp_path_factory):
    from models.tiny import build_tiny_mllama

    return build_tiny_mllama(tmp_path_factory.mktemp("mllama") / "tiny-mllama")


@pytest.fixture(scope="module")
def local(mllama_dir):
    return LocalBackend(name="vl", path=str(mllama_dir))


def test_local_mllama_with_images(local):
    chat = gp_chat(gp_prompt(None, vision=True), image=True)
    a = asyncio.run(local.complete(chat, [GREEN], GREEDY))
    b = asyncio.run(local.complete(chat, [NOISE], GREEDY))
    assert a.ok and b.ok, (a.error, b.error)
    assert a.text != b.text  # the image reaches the model
    # sequential revision: image only in the first user message, still one image
    revised = gp_chat(gp_prompt(None, vision=True), [(a.text, "you recognized wrong cards")], image=True)
    c = asyncio.run(local.complete(revised, [GREEN], GREEDY))
    assert c.ok and c.prompt_tokens > a.prompt_tokens
    # text-only chat on the vision model, and a placeholder/image count mismatch as an error record
    assert asyncio.run(local.complete(gp_chat(gp_prompt(["K", "5", "10", "A"])), [], GREEDY)).ok
    bad = asyncio.run(local.complete(chat, [], GREEDY))
    assert not bad.ok and "placeholder" in bad.error


def test_images_over_http_reach_the_model_unchanged(mllama_dir, local, tmp_path):
    srv = our_server(mllama_dir, "vl", log_path=tmp_path / "vl.log").start()
    try:
        assert srv.wait_healthy(), srv.log_tail()
        remote = OpenAIBackend(name="vl", base_url=srv.health_url.rsplit("/health", 1)[0])
        chat = gp_chat(gp_prompt(None, vision=True), image=True)
        for image in (GREEN, NOISE):
            got = asyncio.run(remote.complete(chat, [image], GREEDY))
            want = asyncio.run(local.complete(chat, [image], GREEDY))
            assert got.ok, got.error
            assert got.text == want.text and got.prompt_tokens == want.prompt_tokens
        asyncio.run(remote.aclose())
    finally:
        srv.stop()
