"""Dynamic batching in the `local` backend, on the in-repo GP-L SFT checkpoint (real model, real
threads): batched replies equal one-at-a-time and `generate` replies, per-request limits and stop
strings hold inside a batch, a request joining a running batch decodes as if alone, a cancelled
stream leaves the others intact, and the waiting queue is bounded.

Batches are made deterministic by holding the model's lock (the worker cannot start a batch) until
`Batcher.wait_pending` reports every request queued; nothing here depends on timing."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("torch")

from models.backends.base import Completion, TextDelta
from models.backends.local import LocalBackend
from models.chat import gp_chat
from models.decoding import DecodingSettings
from models.prompts import gp_prompt

CKPT = Path(__file__).resolve().parents[1] / "models" / "checkpoints" / "gp-l-sft"
LABELS = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"]
GREEDY = DecodingSettings(max_tokens=40, temperature=0.0)


def _chats(n: int) -> list[list[dict]]:
    """`n` GP-L chats of different lengths (some carry a failed try, so prompts differ a lot)."""
    out = []
    for i in range(n):
        prompt = gp_prompt([LABELS[i % 13], LABELS[(i * 5 + 3) % 13], LABELS[(i * 7 + 1) % 13], "10"])
        history = [("{\"formula\": \"1+2\"}", "the formula does not use every card.")] * (i % 3)
        out.append(gp_chat(prompt, history))
    return out


@pytest.fixture(scope="module")
def local():
    backend = LocalBackend(name="gp-l-sft", path=str(CKPT))
    backend.load()
    yield backend
    assert backend.wait_idle(60)


async def _held(backend: LocalBackend, coros: list) -> list:
    """Run `coros` (each one backend request) as one batch: the worker is held off the model
    until all of them are queued."""
    lm = backend.load()
    lm.lock.acquire()
    try:
        tasks = [asyncio.ensure_future(c) for c in coros]
        queued = await asyncio.to_thread(lm.batcher.wait_pending, len(coros), 60)
        assert queued, "the requests never reached the batching queue"
    finally:
        lm.lock.release()
    return await asyncio.gather(*tasks)


def test_batched_greedy_equals_one_at_a_time_and_generate(local):
    import torch

    chats = _chats(12)
    alone = [asyncio.run(local.complete(c, settings=GREEDY)) for c in chats]
    together = asyncio.run(_held(local, [local.complete(c, settings=GREEDY) for c in chats]))
    assert local.batcher.max_rows_seen >= 12
    for a, b in zip(alone, together):
        assert a.ok and b.ok, (a.error, b.error)
        assert a.text == b.text and a.finish_reason == b.finish_reason
        assert a.completion_tokens == b.completion_tokens and a.prompt_tokens == b.prompt_tokens
    assert len({a.completion_tokens for a in alone}) > 1, "rows should leave the batch at different steps"
    # and one-at-a-time equals transformers' own greedy `generate` (the previous implementation)
    lm = local.load()
    for chat, a in list(zip(chats, alone))[:3]:
        inputs = lm.encode(chat, [])
        with torch.inference_mode():
            out = lm.model.generate(**inputs, max_new_tokens=GREEDY.max_tokens, do_sample=False)
        ids = out[0, inputs["input_ids"].shape[-1]:].tolist()
        assert lm.tokenizer.decode(ids, skip_special_tokens=True) == a.text


def test_per_request_limits_stops_and_seeds_inside_one_batch(local):
    chats = _chats(8)
    free = [asyncio.run(local.complete(c, settings=GREEDY)) for c in chats]
    settings = []
    for i, f in enumerate(free):
        if i % 4 == 0:
            settings.append(DecodingSettings(max_tokens=1 + i, temperature=0.0))
        elif i % 4 == 1:
            settings.append(DecodingSettings(max_tokens=40, temperature=0.0, stop=(f.text[6:9],)))
        elif i % 4 == 2:
            settings.append(DecodingSettings(max_tokens=30, temperature=0.9, top_p=0.95, seed=100 + i))
        else:
            settings.append(DecodingSettings(max_tokens=30, temperature=1.0, top_k=5, seed=200 + i))
    seeded_alone = {i: asyncio.run(local.complete(chats[i], settings=s))
                    for i, s in enumerate(settings) if s.seed is not None}
    out = asyncio.run(_held(local, [local.complete(c, settings=s) for c, s in zip(chats, settings)]))
    for i, (f, s, o) in enumerate(zip(free, settings, out)):
        assert o.ok, o.error
        assert 1 <= o.completion_tokens <= s.max_tokens
        if i % 4 == 0:
            assert o.finish_reason == "length" and o.completion_tokens == s.max_tokens
            assert f.text.startswith(o.text)
        elif i % 4 == 1:
            assert o.finish_reason == "stop" and s.stop[0] not in o.text and f.text.startswith(o.text)
        else:  # a seeded sample is the same whatever it is batched with
            assert o.text == seeded_alone[i].text and o.completion_tokens == seeded_alone[i].completion_tokens


def test_a_request_joining_a_running_batch_decodes_as_if_alone(local):
    chats = _chats(6)
    alone = [asyncio.run(local.complete(c, settings=GREEDY)) for c in chats]
    endless = DecodingSettings(max_tokens=4000, min_tokens=4000, temperature=0.0)

    async def go():
        long = local.stream(gp_chat(gp_prompt(["K", "Q", "J", "A"])), (), endless)
        first = await anext(long)  # the long row is decoding now: every later request must join it
        assert isinstance(first, TextDelta)
        joined_before = local.batcher.joined_rows
        try:
            results = await asyncio.gather(*[local.complete(c, settings=GREEDY) for c in chats])
        finally:
            await long.aclose()
        return results, local.batcher.joined_rows - joined_before

    results, joined = asyncio.run(go())
    assert joined == len(chats)
    for a, b in zip(alone, results):
        assert b.ok and a.text == b.text and a.completion_tokens == b.completion_tokens
    assert local.wait_idle(60) and not local.batcher.busy
    assert local.last_generated_tokens is not None and local.last_generated_tokens < 4000


def test_a_cancelled_stream_does_not_disturb_its_batch(local):
    chats = _chats(5)
    alone = [asyncio.run(local.complete(c, settings=GREEDY)) for c in chats]
    endless = DecodingSettings(max_tokens=4000, min_tokens=4000, temperature=0.0)

    async def leave_early():
        stream = local.stream(gp_chat(gp_prompt(["A", "2", "3", "4"])), (), endless)
        got = []
        async for item in stream:
            assert isinstance(item, TextDelta)
            got.append(item)
            if len(got) == 2:
                break
        await stream.aclose()  # the user left
        return got

    out = asyncio.run(_held(local, [leave_early()] + [local.complete(c, settings=GREEDY) for c in chats]))
    assert len(out[0]) == 2
    for a, b in zip(alone, out[1:]):
        assert isinstance(b, Completion) and b.ok and a.text == b.text
    assert local.wait_idle(60) and not local.batcher.busy
    # the model still answers
    assert asyncio.run(local.complete(chats[0], settings=GREEDY)).text == alone[0].text


def test_waiting_requests_are_bounded():
    backend = LocalBackend(name="bounded", path=str(CKPT), max_pending=2)
    lm = backend.load()
    small = DecodingSettings(max_tokens=3, temperature=0.0)

    async def go():
        lm.lock.acquire()
        try:
            tasks = [asyncio.ensure_future(backend.complete(c, settings=small)) for c in _chats(2)]
            assert await asyncio.to_thread(lm.batcher.wait_pending, 2, 60)
            refused = await backend.complete(_chats(3)[2], settings=small)
        finally:
            lm.lock.release()
        return refused, await asyncio.gather(*tasks)

    refused, served = asyncio.run(go())
    assert not refused.ok and "busy" in refused.error
    assert all(s.ok for s in served)
    too_long = asyncio.run(backend.complete(_chats(1)[0], settings=DecodingSettings(max_tokens=10**6)))
    assert not too_long.ok and "max_tokens" in too_long.error
    assert backend.wait_idle(60)


def test_a_prompt_extending_a_recent_one_reuses_its_keys_and_values(local):
    """The next turn of an episode (previous prompt + reply + feedback) computes only the new
    tokens, and decodes exactly as a backend without the prefix cache."""
    cold = LocalBackend(name="cold", path=str(CKPT), prefix_cache_tokens=0)
    prompt = gp_prompt(["9", "4", "Q", "2"])
    first = asyncio.run(local.complete(gp_chat(prompt), settings=GREEDY))
    second_turn = gp_chat(prompt, [(first.text, "the formula does not use every card.")])
    reused_before = local.batcher.reused_tokens
    warm = asyncio.run(local.complete(second_turn, settings=GREEDY))
    assert local.batcher.reused_tokens - reused_before >= first.prompt_tokens
    reference = asyncio.run(cold.complete(second_turn, settings=GREEDY))
    assert cold.batcher.reused_tokens == 0
    assert warm.ok and warm.text == reference.text and warm.completion_tokens == reference.completion_tokens
    assert local.batcher.prefixes.used <= local.batcher.prefixes.budget
    assert cold.wait_idle(60)
