"""The `openai` backend against a real OpenAI-compatible server on loopback: our FastAPI server
(`models.serve_openai`) serving the tiny checkpoint in a uvicorn subprocess. No stubs: the replies
come from the model, and must equal what the same checkpoint produces in-process."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from models.backends.base import Completion, TextDelta
from models.backends.local import LocalBackend
from models.backends.openai import OpenAIBackend, encode_image, openai_messages, request_body
from models.chat import gp_chat, user_message
from models.decoding import DecodingSettings
from models.procs import free_port, our_server
from models.prompts import gp_prompt

GREEDY = DecodingSettings(max_tokens=20, temperature=0.0)


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tmp_path_factory):
    srv = our_server(tiny_llama_dir, "tiny", log_path=tmp_path_factory.mktemp("srv") / "server.log").start()
    try:
        assert srv.wait_healthy(), f"server did not come up:\n{srv.log_tail()}"
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def local(tiny_llama_dir):
    return LocalBackend(name="tiny-local", path=str(tiny_llama_dir))


def _backend(server, **kw):
    base = server.health_url.rsplit("/health", 1)[0]
    return OpenAIBackend(name="tiny", base_url=base, **kw)


async def _run(backend, messages, settings=GREEDY):
    deltas, final = [], None
    async for item in backend.stream(messages, (), settings):
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            final = item
    await backend.aclose()
    return deltas, final


def test_health_and_models(server):
    b = _backend(server)
    health = asyncio.run(b.health())
    assert health.ok and health.models == ("tiny",)
    wrong = asyncio.run(OpenAIBackend(name="x", base_url=b.base_url, served_name="other").health())
    assert not wrong.ok and "other" in wrong.detail


def test_streaming_matches_in_process_generation(server, local):
    messages = gp_chat(gp_prompt(["K", "5", "10", "A"]))
    deltas, final = asyncio.run(_run(_backend(server), messages))
    assert isinstance(final, Completion) and final.ok, final
    assert len(deltas) > 3 and "".join(deltas) == final.text
    assert final.completion_tokens == len(deltas) or final.completion_tokens >= 1
    assert final.prompt_tokens > 50 and final.finish_reason in ("length", "stop")
    assert final.time_to_first_token_s is not None
    expected = asyncio.run(local.complete(messages, settings=GREEDY))
    assert final.text == expected.text  # same checkpoint, same chat, greedy → same reply


def test_multi_turn_chat_reaches_the_model(server, local):
    prompt = gp_prompt(["2", "3", "4", "5"])
    first = asyncio.run(_run(_backend(server), gp_chat(prompt)))[1]
    chat = gp_chat(prompt, [(first.text, "illegal characters."), ("(2+3", "partial solution.")])
    _, final = asyncio.run(_run(_backend(server), chat))
    expected = asyncio.run(local.complete(chat, settings=GREEDY))
    assert final.ok and final.text == expected.text
    assert final.prompt_tokens == expected.prompt_tokens > first.prompt_tokens


def test_concurrent_requests(server):
    b = _backend(server)
    prompts = [gp_prompt(c) for c in (["A", "2", "3", "4"], ["5", "6", "7", "8"], ["9", "10", "J", "Q"])]

    async def go():
        results = await asyncio.gather(*[b.complete(gp_chat(p), settings=GREEDY) for p in prompts * 2])
        await b.aclose()
        return results

    results = asyncio.run(go())
    assert all(r.ok for r in results), [r.error for r in results]
    # same prompt → same greedy reply, whatever the interleaving
    assert [r.text for r in results[:3]] == [r.text for r in results[3:]]


def test_non_streaming_and_http_errors(server):
    import httpx

    base = server.health_url.rsplit("/health", 1)[0]
    body = request_body("tiny", openai_messages(gp_chat("hello")), DecodingSettings(max_tokens=4), stream=False)
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=60, trust_env=False)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert r.json()["usage"]["completion_tokens"] >= 1
    # unknown model → clear error record, not an exception
    out = asyncio.run(OpenAIBackend(name="m", base_url=base, served_name="nope").complete(gp_chat("hi")))
    assert not out.ok and "404" in out.error and "nope" in out.error
    # an image sent to a text-only model → 400 with the server's reason
    img = [user_message("see", image=True)]
    b = _backend(server)
    out = asyncio.run(b.complete(img, [_png()]))
    assert not out.ok and "400" in out.error and "text-only" in out.error


def test_connection_refused_is_a_quick_clean_error():
    port = free_port()
    b = OpenAIBackend(name="dead", base_url=f"http://127.0.0.1:{port}", retries=2, retry_backoff_s=0.01)
    out = asyncio.run(b.complete(gp_chat("hi")))
    assert not out.ok and out.finish_reason == "error"
    assert "cannot connect" in out.error and "3 attempt" in out.error
    assert not asyncio.run(b.health()).ok


class StallingUpstream:
    """A controlled OpenAI-compatible upstream on loopback for the mid-stream failure: it answers
    a streaming chat request with the SSE head and `n` deltas, then stalls until the test says
    `cut()`, which resets the connection. The client has seen exactly `n` deltas when the
    connection dies: no race with socket buffers (a real server killed with SIGKILL may already
    have written the whole reply)."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self._cut = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    def cut(self) -> None:
        self._cut.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import json as _json

        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        for i in range(self.n):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}
            writer.write(b"data: " + _json.dumps(chunk).encode() + b"\n\n")
        await writer.drain()
        await self._cut.wait()
        writer.transport.abort()  # a reset, as when the server process dies

    async def close(self) -> None:
        self.server.close()
        for w in self.writers:
            w.transport.abort()


def test_connection_lost_mid_stream_is_a_clean_error():
    async def go():
        upstream = StallingUpstream(n=2)
        b = OpenAIBackend(name="stall", base_url=await upstream.start(), retries=0)
        got, final = [], None
        async for item in b.stream(gp_chat("hi"), (), GREEDY):
            if isinstance(item, TextDelta):
                got.append(item.text)
                if len(got) == 2:
                    upstream.cut()  # only now, with two deltas in hand, does the upstream die
            else:
                final = item
        await b.aclose()
        await upstream.close()
        return got, final

    got, final = asyncio.run(go())
    assert got == ["tok0 ", "tok1 "]
    assert final is not None and not final.ok and final.finish_reason == "error"
    assert "mid-stream after 10 characters" in final.error or "ended before" in final.error, final.error
    assert final.text == "tok0 tok1 "


def test_payload_building():
    msgs = [user_message("look", image=True), {"role": "assistant", "content": [{"type": "text", "text": "r"}]},
            user_message("again")]
    out = openai_messages(msgs, [_png()])
    assert out[0]["content"][0]["type"] == "image_url"
    assert out[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert out[0]["content"][1] == {"type": "text", "text": "look"}
    assert out[1] == {"role": "assistant", "content": "r"} and out[2]["content"] == "again"
    assert encode_image(_png(), "jpeg").startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError):
        openai_messages(msgs, [])
    body = request_body("m", out, DecodingSettings(max_tokens=7, temperature=0.2, top_p=0.9, stop=("}",)))
    assert body["max_tokens"] == 7 and body["temperature"] == 0.2 and body["stop"] == ["}"] and body["stream"]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (53, 101, 77)).save(buf, format="PNG")
    return buf.getvalue()


def test_side_by_side_dead_and_hanging_backends_do_not_block(server):
    import socket

    from models.compare import complete_all, side_by_side

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts TCP connections but never answers
    try:
        backends = {
            "live": _backend(server),
            "dead": OpenAIBackend(name="dead", base_url=f"http://127.0.0.1:{free_port()}", retries=1,
                                  retry_backoff_s=0.01),
            "hang": OpenAIBackend(name="hang", base_url=f"http://127.0.0.1:{hanging.getsockname()[1]}",
                                  read_timeout_s=30),
        }
        messages = gp_chat(gp_prompt(["K", "5", "10", "A"]))

        async def go():
            order = []
            async for name, item in side_by_side(backends, messages, (), GREEDY, deadline_s=8):
                if isinstance(item, Completion):
                    order.append(name)
            return order

        order = asyncio.run(go())
        assert set(order) == {"live", "dead", "hang"} and order[-1] == "hang"  # the hanging one ends last
        results = asyncio.run(complete_all({"live": backends["live"], "dead": backends["dead"]}, messages,
                                           settings=GREEDY))
        assert results["live"].ok and not results["dead"].ok and "cannot connect" in results["dead"].error
        out = asyncio.run(complete_all({"hang": backends["hang"]}, messages, settings=GREEDY, deadline_s=0.5))
        assert not out["hang"].ok and "within 0.5 s" in out["hang"].error
        # the backend's own read timeout ends a request that gets no answer
        slow = OpenAIBackend(name="hang", base_url=backends["hang"].base_url, read_timeout_s=0.5)
        out = asyncio.run(slow.complete(messages, settings=GREEDY))
        assert not out.ok and "no response" in out.error and "0.5 s" in out.error
    finally:
        hanging.close()


def test_client_leaving_cancels_generation_on_the_server(server):
    import httpx

    base = server.health_url.rsplit("/health", 1)[0]
    b = _backend(server)

    async def go():
        stream = b.stream(gp_chat(gp_prompt(["A", "2", "3", "4"])), (),
                          DecodingSettings(max_tokens=3500, min_tokens=3500, temperature=0.0))
        got = 0
        async for item in stream:
            assert isinstance(item, TextDelta)
            got += 1
            if got == 2:
                break
        await stream.aclose()  # the user left
        await b.aclose()

    asyncio.run(go())
    stats = None
    for _ in range(300):  # bounded wait for the server to notice and stop
        stats = httpx.get(base + "/stats", timeout=5, trust_env=False).json()["tiny"]
        if not stats["busy"]:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert not stats["busy"]
    assert stats["last_generated_tokens"] is not None and stats["last_generated_tokens"] < 3500
    # and the server still answers
    assert asyncio.run(_backend(server).complete(gp_chat("hi"), settings=GREEDY)).ok
