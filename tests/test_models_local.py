"""The in-process `local` backend on a tiny random Llama checkpoint: real token streaming, token
counts, greedy determinism, cancellation, and errors as records."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from models.backends.base import Completion, TextDelta
from models.backends.local import LocalBackend, generation_kwargs
from models.chat import gp_chat, user_message
from models.decoding import DecodingSettings
from models.prompts import gp_prompt, virl_action_space, virl_prompt

GREEDY = DecodingSettings(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def local(tiny_llama_dir):
    backend = LocalBackend(name="tiny", path=str(tiny_llama_dir))
    backend.load()
    return backend


async def _collect(backend, messages, images=(), settings=GREEDY):
    deltas, final = [], None
    async for item in backend.stream(messages, images, settings):
        if isinstance(item, TextDelta):
            assert final is None, "deltas must come before the final record"
            deltas.append(item.text)
        else:
            final = item
    return deltas, final


def test_streams_token_deltas_then_one_completion(local):
    messages = gp_chat(gp_prompt(["K", "5", "10", "A"]))
    deltas, final = asyncio.run(_collect(local, messages))
    assert isinstance(final, Completion) and final.ok, final
    assert len(deltas) > 3 and "".join(deltas) == final.text
    assert final.finish_reason in ("length", "stop")
    assert final.prompt_tokens > 50
    assert 1 <= final.completion_tokens <= 24
    assert final.time_to_first_token_s is not None and final.elapsed_s >= final.time_to_first_token_s


def test_greedy_is_deterministic_and_history_changes_output(local):
    prompt = gp_prompt(["2", "3", "4", "5"])
    a = asyncio.run(local.complete(gp_chat(prompt), settings=GREEDY))
    b = asyncio.run(local.complete(gp_chat(prompt), settings=GREEDY))
    assert a.ok and a.text == b.text
    longer = gp_chat(prompt, [(a.text, "illegal characters.")])
    c = asyncio.run(local.complete(longer, settings=GREEDY))
    assert c.ok and c.prompt_tokens > a.prompt_tokens


def test_virl_prompt_runs(local):
    text = virl_prompt("1. First, turn left to face north.\n", "O_1: No landmarks nearby; \nA_1: \n",
                       virl_action_space(False))
    out = asyncio.run(local.complete([user_message(text)], settings=DecodingSettings(max_tokens=5, seed=1,
                                                                                      temperature=0.7)))
    assert out.ok and out.completion_tokens >= 1


def test_cancellation_stops_generation(local):
    async def go():
        stream = local.stream(gp_chat(gp_prompt(["A", "2", "3", "4"])), (),
                              DecodingSettings(max_tokens=3000, min_tokens=3000, temperature=0.0))
        async for item in stream:
            assert isinstance(item, TextDelta)
            break
        await stream.aclose()

    asyncio.run(go())
    assert local.wait_idle()
    assert local.last_generated_tokens is not None and local.last_generated_tokens < 3000
    again = asyncio.run(local.complete(gp_chat(gp_prompt(["A", "2", "3", "4"])), settings=GREEDY))
    assert again.ok


def test_errors_become_records(local, tiny_llama_dir, tmp_path):
    # an image for a text-only checkpoint
    msg = [user_message("look", image=True)]
    out = asyncio.run(local.complete(msg, [b"not an image"]))
    assert not out.ok and out.finish_reason == "error" and "text-only" in out.error
    # a missing checkpoint
    missing = LocalBackend(name="missing", path=str(tmp_path / "nope"))
    out = asyncio.run(missing.complete(gp_chat("hi")))
    assert not out.ok and "config.json" in out.error
    assert not asyncio.run(missing.health()).ok
    assert asyncio.run(local.health()).ok


def test_stop_strings_and_generation_kwargs(local):
    free = asyncio.run(local.complete(gp_chat(gp_prompt(["K", "5", "10", "A"])), settings=GREEDY))
    stop = free.text[5:8]
    cut = asyncio.run(local.complete(gp_chat(gp_prompt(["K", "5", "10", "A"])),
                                     settings=DecodingSettings(max_tokens=24, temperature=0.0, stop=(stop,))))
    assert cut.finish_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)
    assert generation_kwargs(DecodingSettings(max_tokens=9)) == {"max_new_tokens": 9}
    assert generation_kwargs(DecodingSettings(max_tokens=9, min_tokens=9))["min_new_tokens"] == 9
    assert generation_kwargs(DecodingSettings(temperature=0.2, top_p=0.9)) == {
        "max_new_tokens": 256, "do_sample": True, "temperature": 0.2, "top_p": 0.9}


def test_two_backends_loading_the_same_checkpoint_at_once(tiny_llama_dir):
    """Concurrent first loads in worker threads must not corrupt each other (meta-device race)."""
    import asyncio

    from models.backends.local import LocalBackend

    async def both():
        a, b = LocalBackend("a", path=str(tiny_llama_dir)), LocalBackend("b", path=str(tiny_llama_dir))
        msgs = [{"role": "user", "content": [{"type": "text", "text": "Cards: ['K', '5', '10', 'A']"}]}]
        try:
            return await asyncio.gather(a.complete(msgs), b.complete(msgs))
        finally:
            await a.aclose()
            await b.aclose()

    for _ in range(3):
        results = asyncio.run(both())
        assert all(r.ok for r in results), [r.error for r in results]


def test_tiny_checkpoint_is_reproducible_and_lossless(tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    from models.chat import gp_chat
    from models.prompts import response_eqn
    from models.tiny import build_tiny_llama, default_corpus

    corpus = default_corpus(n=40, seed=3)
    a = build_tiny_llama(tmp_path / "a", corpus, hidden=32, layers=1, seed=7)
    b = build_tiny_llama(tmp_path / "b", corpus, hidden=32, layers=1, seed=7)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    for text in (gp_prompt(["K", "5", "10", "A"], "11-13", eg=True), response_eqn(["K", "5", "10", "A"], [10, 5, 10, 1], "10+10+5-1"),
                 "ünïcode ✓ 24"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    rendered = tok.apply_chat_template(gp_chat("hi"), add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert rendered.endswith("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n")
    with_image = tok.apply_chat_template(gp_chat("hi", image=True), add_generation_prompt=True, tokenize=False)
    assert "system" not in with_image and "<|image|>hi<|eot_id|>" in with_image
