"""Backend benchmarks: REST load under 50 concurrent clients against a real `sftvsrl serve` process
on loopback (requests/s, p50/p95/p99 latency for deal and verify, errors, server RSS including its
worker processes), and evaluation throughput (episodes/s) at
concurrency 1 vs 16 with the tiny checkpoint behind our OpenAI-compatible server (real HTTP)."""
from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from run import report

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 50
REQUESTS_PER_CLIENT = 20


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


class _Conn:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator must cost far
    less CPU than the server it measures (httpx costs about as much per request as the server)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: application/json\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        data = await self.reader.readexactly(length)
        return int(status_line.split()[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _load(port: int) -> dict[str, list[float]]:
    import json

    lat: dict[str, list[float]] = {"deal": [], "verify": [], "errors": []}

    async def one_client(i: int) -> None:
        conn = _Conn("127.0.0.1", port)
        try:
            for j in range(REQUESTS_PER_CLIENT):
                t = time.perf_counter()
                try:
                    status, data = await conn.request("GET", f"/api/gp/deal?seed={i * 1000 + j}")
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    lat["errors"].append(1.0)
                    conn.close()
                    conn = _Conn("127.0.0.1", port)
                    continue
                lat["deal"].append(time.perf_counter() - t)
                if status != 200:
                    lat["errors"].append(1.0)
                    continue
                deal = json.loads(data)["deal_id"]
                body = json.dumps({"deal_id": deal, "formula": "(1+2)*(3+5)"}).encode()
                t = time.perf_counter()
                status, data = await conn.request("POST", "/api/gp/verify", body)
                lat["verify"].append(time.perf_counter() - t)
                if status != 200:
                    lat["errors"].append(1.0)
        finally:
            conn.close()

    await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    return lat


def _rss_mib(pid: int) -> float:
    """Resident memory of the server and its children (the worker pool), MiB."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def bench_api_latency(tmp: Path) -> None:
    from models.procs import ManagedServer, free_port

    port = free_port()
    env = {"PYTHONPATH": str(ROOT), "SFTVSRL_DATA_DIR": str(tmp / "api-data")}
    srv = ManagedServer("app", [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level",
                                "warning"], f"http://127.0.0.1:{port}/api/health", env=env,
                        log_path=tmp / "api.log").start()
    try:
        if not srv.wait_healthy(60):
            print("api server did not start:", srv.log_tail())
            return
        asyncio.run(_load(port))  # warm-up (solver caches, worker pool start)
        start = time.perf_counter()
        lat = asyncio.run(_load(port))
        wall = time.perf_counter() - start
        errors = len(lat.pop("errors"))
        n = sum(len(v) for v in lat.values())
        report(f"api requests/s ({CLIENTS} clients)", n / wall, "req/s")
        for name, values in lat.items():
            ms = [v * 1000 for v in values]
            report(f"api {name} p50 ({CLIENTS} clients)", statistics.median(ms), "ms", higher_is_better=False)
            report(f"api {name} p95 ({CLIENTS} clients)", _percentile(ms, 95), "ms", target="p95 < 50 ms",
                   higher_is_better=False)
            report(f"api {name} p99 ({CLIENTS} clients)", _percentile(ms, 99), "ms", higher_is_better=False)
        report(f"api errors ({CLIENTS} clients, {n} requests)", errors, "", target="0", higher_is_better=False)
        report("api server RSS incl. workers", _rss_mib(srv.proc.pid), "MiB", higher_is_better=False)
    finally:
        srv.stop()


def bench_eval_concurrency(tmp: Path, episodes: int = 8) -> None:
    from app.evaluation import EvalConfig, run_evaluation
    from app.runner import ModelPlayer
    from app.store import Store
    from models.backends.openai import OpenAIBackend
    from models.decoding import DecodingSettings
    from models.procs import our_server
    from models.tiny import build_tiny_llama

    ckpt = build_tiny_llama(tmp / "tiny", seed=0)
    srv = our_server(ckpt, "tiny", log_path=tmp / "model.log").start()
    try:
        if not srv.wait_healthy(120):
            print("model server did not start:", srv.log_tail())
            return
        base = srv.health_url.rsplit("/health", 1)[0]
        settings = DecodingSettings(max_tokens=16, temperature=0.0)
        rates = {1: 0.0, 16: 0.0}
        for attempt in range(2):  # interleaved, best of two: the machine is shared
            for conc in (1, 16):
                store = Store(f"sqlite:///{tmp / f'eval{conc}-{attempt}.db'}")
                backend = OpenAIBackend(name="tiny", base_url=base)
                config = EvalConfig(task="gp-l", models=["tiny"], episodes=episodes, splits=["id"],
                                    concurrency=conc)
                start = time.perf_counter()
                asyncio.run(run_evaluation(store, lambda n: ModelPlayer(n, backend, settings), config))
                rates[conc] = max(rates[conc], episodes / (time.perf_counter() - start))
                asyncio.run(backend.aclose())
                store.close()
        # One model server generates one request at a time (one lock per model), so concurrency
        # only overlaps HTTP, grading and storage with generation; with several models (paired
        # runs) or a batching server (vLLM) the requests really run in parallel.
        report("eval gp-l episodes/s, concurrency 1", rates[1], "ep/s")
        report("eval gp-l episodes/s, concurrency 16", rates[16], "ep/s", baseline=rates[1],
               baseline_name="concurrency 1")
    finally:
        srv.stop()


def run() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sftvsrl-bench-api-"))
    try:
        bench_api_latency(tmp)
        if os.environ.get("SFTVSRL_BENCH_SKIP_MODEL") != "1":
            bench_eval_concurrency(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
