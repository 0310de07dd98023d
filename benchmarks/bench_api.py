"""Backend benchmarks: REST load under 50 concurrent clients against a real `sftvsrl serve` process
on loopback (requests/s, p50/p95/p99 latency for deal and verify, errors, server RSS including its
worker processes); a bystander's deals while another client floods slow verifies (24 concurrent);
`/api/health` while the largest allowed evaluation starts (a public server, the operator token);
and evaluation throughput (episodes/s) at concurrency 1 vs 16: in-process (`local` backend, the
in-repo GP-L SFT checkpoint on ID) and with a tiny checkpoint behind our OpenAI-compatible server
(real HTTP); and a realistic evaluation: the shipped `rl` on rule-OOD with all 5 tries (against the
shipped `sft` on the same hands), with its replies' lengths."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from run import report, torch_threads

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

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.host, self.port, self.source = host, port, source
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, local_addr=(self.source, 0) if self.source else None)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: application/json\r\n{headers}\r\n").encode()
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


FLOODERS = 24
FLOOD_BODY = json.dumps({"deal_id": "HKC5D2C4", "reply": '"cards": [' * 1638, "lenient": True}).encode()


async def _flood(port: int, bystander_requests: int = 200) -> dict:
    """24 connections from one address post the largest lenient verify in a loop (the flood of
    issue 24) while a bystander on another address deals hands one after another."""
    stop = asyncio.Event()
    out: dict[str, list] = {"bystander": [], "bystander_errors": [], "flood": [], "flood_5xx": []}

    async def flooder() -> None:
        conn = _Conn("127.0.0.1", port, source="127.0.0.2")
        try:
            while not stop.is_set():
                status, _ = await conn.request("POST", "/api/gp/verify", FLOOD_BODY)
                out["flood"].append(status)
                if status >= 500:
                    out["flood_5xx"].append(status)
        finally:
            conn.close()

    async def bystander() -> None:
        conn = _Conn("127.0.0.1", port, source="127.0.0.3")
        try:
            while len(out["flood"]) < FLOODERS:   # the flood is under way
                await asyncio.sleep(0.01)
            for i in range(bystander_requests):
                t = time.perf_counter()
                status, _ = await conn.request("GET", f"/api/gp/deal?seed={i}")
                out["bystander"].append(time.perf_counter() - t)
                if status != 200:
                    out["bystander_errors"].append(status)
        finally:
            conn.close()
            stop.set()

    await asyncio.gather(bystander(), *(flooder() for _ in range(FLOODERS)))
    return out


def bench_flood(port: int) -> None:
    out = asyncio.run(_flood(port))
    ms = [v * 1000 for v in out["bystander"]]
    report(f"api bystander deal p50 ({FLOODERS} flooding verifies)", statistics.median(ms), "ms",
           higher_is_better=False)
    report(f"api bystander deal p95 ({FLOODERS} flooding verifies)", _percentile(ms, 95), "ms",
           target="p95 < 250 ms", higher_is_better=False)
    report(f"api flood: 5xx of {len(out['flood'])} verifies, bystander errors", len(out["flood_5xx"])
           + len(out["bystander_errors"]), "", target="0", higher_is_better=False)


ADMIN = "bench-operator"


async def _health_during_eval_start(port: int) -> tuple[list[float], int, dict]:
    """`/api/health` latencies from the moment the largest allowed evaluation is requested until
    3 s after it was started (then it is cancelled)."""
    import json as _json

    from app.evaluation import MAX_EPISODES_PER_SPLIT

    auth = f"Authorization: Bearer {ADMIN}\r\n"
    starter, prober = _Conn("127.0.0.1", port), _Conn("127.0.0.1", port)
    lat: list[float] = []
    errors = 0
    body = _json.dumps({"task": "gp-l", "models": ["sft", "rl"], "episodes": MAX_EPISODES_PER_SPLIT}).encode()
    start = asyncio.create_task(starter.request("POST", "/api/evaluations", body, auth))
    until = None
    while until is None or time.perf_counter() < until:
        t = time.perf_counter()
        status, _ = await prober.request("GET", "/api/health")
        lat.append(time.perf_counter() - t)
        errors += status != 200
        if start.done() and until is None:
            until = time.perf_counter() + 3.0
        await asyncio.sleep(0.005)
    status, data = await start
    run = _json.loads(data) if status == 202 else {"error": data[:200]}
    if status == 202:
        await starter.request("POST", f"/api/evaluations/{run['id']}/cancel", b"", auth)
    starter.close()
    prober.close()
    return lat, errors, run


def bench_eval_start(tmp: Path) -> None:
    from models.procs import ManagedServer, free_port

    port = free_port()
    env = {"PYTHONPATH": str(ROOT), "SFTVSRL_DATA_DIR": str(tmp / "eval-start-data"), "SFTVSRL_ADMIN_TOKEN": ADMIN}
    srv = ManagedServer("app", [sys.executable, "-m", "app.cli", "serve", "--public", "--port", str(port),
                                "--log-level", "warning"], f"http://127.0.0.1:{port}/api/health", env=env,
                        log_path=tmp / "eval-start.log").start()
    try:
        if not srv.wait_healthy(120):
            print("api server did not start:", srv.log_tail())
            return
        lat, errors, run = asyncio.run(_health_during_eval_start(port))
        ms = [v * 1000 for v in lat]
        what = f"{run.get('total', '?'):,} episodes" if isinstance(run.get("total"), int) else str(run)[:60]
        report(f"api health p95 while the largest eval starts ({what})", _percentile(ms, 95), "ms",
               target="p95 < 100 ms", higher_is_better=False)
        report("api health errors meanwhile", errors, "", target="0", higher_is_better=False)
    finally:
        srv.stop()


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
        import psutil

        server = psutil.Process(srv.proc.pid)
        cpu_before = sum(server.cpu_times()[:2])
        start = time.perf_counter()
        lat = asyncio.run(_load(port))
        wall = time.perf_counter() - start
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        errors = len(lat.pop("errors"))
        n = sum(len(v) for v in lat.values())
        report(f"api requests/s ({CLIENTS} clients)", n / wall, "req/s")
        # CPU per request does not depend on what else runs on the machine (latency does)
        report("api server CPU per request (deal + verify)", 1000 * cpu / n, "ms", higher_is_better=False)
        for name, values in lat.items():
            ms = [v * 1000 for v in values]
            report(f"api {name} p50 ({CLIENTS} clients)", statistics.median(ms), "ms", higher_is_better=False)
            report(f"api {name} p95 ({CLIENTS} clients)", _percentile(ms, 95), "ms", target="p95 < 50 ms",
                   higher_is_better=False)
            report(f"api {name} p99 ({CLIENTS} clients)", _percentile(ms, 99), "ms", higher_is_better=False)
        report(f"api errors ({CLIENTS} clients, {n} requests)", errors, "", target="0", higher_is_better=False)
        report("api server RSS incl. workers", _rss_mib(srv.proc.pid), "MiB", higher_is_better=False)
        bench_flood(port)
    finally:
        srv.stop()


def _eval_rates(tmp: Path, label: str, make_backend, settings, episodes: int, rounds: int = 2) -> dict[int, float]:
    """GP-L evaluation episodes/s at concurrency 1 and 16 against one backend (best of `rounds`,
    interleaved: the machine is shared), through `app.evaluation.run_evaluation`."""
    from app.evaluation import EvalConfig, run_evaluation
    from app.runner import ModelPlayer
    from app.store import Store

    rates = {1: 0.0, 16: 0.0}
    for attempt in range(rounds):
        for conc in (1, 16):
            store = Store(f"sqlite:///{tmp / f'eval-{label}-{conc}-{attempt}.db'}")
            backend = make_backend(conc)
            config = EvalConfig(task="gp-l", models=["tiny"], episodes=episodes, splits=["id"], concurrency=conc)
            start = time.perf_counter()
            asyncio.run(run_evaluation(store, lambda n: ModelPlayer(n, backend, settings), config))
            rates[conc] = max(rates[conc], episodes / (time.perf_counter() - start))
            asyncio.run(backend.aclose())
            store.close()
    return rates


def bench_eval_concurrency(tmp: Path, episodes: int = 8) -> None:
    from models.backends.openai import OpenAIBackend
    from models.decoding import DecodingSettings
    from models.procs import our_server
    from models.tiny import build_tiny_llama

    ckpt = build_tiny_llama(tmp / "tiny", seed=0)
    srv = our_server(ckpt, "tiny", log_path=tmp / "model.log", threads=1).start()
    try:
        if not srv.wait_healthy(120):
            print("model server did not start:", srv.log_tail())
            return
        base = srv.health_url.rsplit("/health", 1)[0]
        settings = DecodingSettings(max_tokens=16, temperature=0.0)
        rates = _eval_rates(tmp, "http", lambda conc: OpenAIBackend(name="tiny", base_url=base), settings, episodes)
        # The server's `local` backend batches concurrent requests (one KV cache per batch), so
        # concurrency overlaps HTTP, grading and storage with generation and shares decoding steps.
        report("eval gp-l episodes/s via our server, conc. 1", rates[1], "ep/s")
        report("eval gp-l episodes/s via our server, conc. 16", rates[16], "ep/s", baseline=rates[1],
               baseline_name="concurrency 1")
    finally:
        srv.stop()


def bench_local_eval_concurrency(tmp: Path, episodes: int = 96) -> None:
    """The in-process `local` backend on the in-repo GP-L SFT checkpoint, with its own decoding
    (the paper's: sampling from the checkpoint's generation config, 256 new tokens), as
    `sftvsrl eval` runs it, with one torch thread (`run.torch_threads`)."""
    from models.backends.local import LocalBackend
    from models.decoding import PAPER_EVAL

    ckpt = ROOT / "models" / "checkpoints" / "gp-l-sft"
    made: list = []

    def fresh(conc: int) -> LocalBackend:  # loaded before the clock starts; a cold prefix cache each run
        backend = LocalBackend(name="tiny", path=str(ckpt))
        backend.load()
        made.append((conc, backend))
        return backend

    try:
        with torch_threads(1):
            rates = _eval_rates(tmp, "local", fresh, PAPER_EVAL, episodes)
    finally:
        for _, backend in made:
            backend.wait_idle()
    batched = [b.batcher for conc, b in made if conc == 16]
    steps, tokens = sum(b.steps for b in batched), sum(b.tokens for b in batched)
    prompt, reused = sum(b.prompt_tokens for b in batched), sum(b.reused_tokens for b in batched)
    mean_rows = tokens / steps if steps else 0.0
    reused = reused / prompt if prompt else 0.0
    report("eval gp-l episodes/s, local, concurrency 1", rates[1], "ep/s")
    report("eval gp-l episodes/s, local, concurrency 16", rates[16], "ep/s", baseline=rates[1],
           baseline_name="concurrency 1", target=">= 4x")
    print(f"    (local, concurrency 16: {mean_rows:.1f} rows per decoding step on average, "
          f"{reused:.0%} of prompt tokens reused from the prefix cache)", flush=True)


def bench_realistic_eval(tmp: Path, episodes: int = 48, concurrency: int = 16) -> None:
    """A realistic evaluation: the shipped GP-L `rl` checkpoint on rule-OOD with the paper's
    protocol (all 5 tries with sequential revision, its own decoding, 256 new tokens), as `sftvsrl
    eval --task gp-l --models rl --splits rule-ood` runs it; the shipped `sft` on the same hands is
    the baseline. Also: calls per episode, tokens per reply, and the share of replies that ran to
    the token limit (a reply that does not end when its answer ends makes an evaluation slow)."""
    from app.evaluation import EvalConfig, run_evaluation
    from app.runner import ModelPlayer
    from app.store import Store
    from models.backends.local import LocalBackend
    from models.decoding import PAPER_EVAL

    ckpts = ROOT / "models" / "checkpoints"
    out = {}
    for stage in ("sft", "rl"):
        backend = LocalBackend(name=stage, path=str(ckpts / f"gp-l-{stage}"))
        backend.load()   # loaded before the clock starts
        store = Store(f"sqlite:///{tmp / f'realistic-{stage}.db'}")
        config = EvalConfig(task="gp-l", models=[stage], episodes=episodes, splits=["rule-ood"],
                            concurrency=concurrency)
        start = time.perf_counter()
        with torch_threads(1):
            asyncio.run(run_evaluation(store, lambda n: ModelPlayer(n, backend, PAPER_EVAL), config))
        wall = time.perf_counter() - start
        steps = [st for ep in store.iter_episodes(task="gp-l") for st in store.steps(ep["id"], prompts=False)]
        timings = [st.get("timing") or {} for st in steps]
        at_limit = sum(1 for t in timings if t.get("finish_reason") == "length")
        tokens = [t.get("completion_tokens") or 0 for t in timings]
        out[stage] = (episodes / wall, len(steps) / episodes, statistics.mean(tokens) if tokens else 0.0,
                      at_limit / len(steps) if steps else 0.0)
        backend.wait_idle()
        store.close()
    rl, sft = out["rl"], out["sft"]
    report(f"realistic eval: shipped rl, gp-l rule-OOD, 5 tries, conc. {concurrency}", rl[0], "ep/s",
           baseline=sft[0], baseline_name="shipped sft, same hands")
    for stage, (_, calls, tokens, limit) in out.items():
        print(f"    ({stage}: {calls:.1f} calls per episode, {tokens:.0f} tokens per reply, {limit:.0%} of "
              f"replies ran to the {PAPER_EVAL.max_tokens}-token limit)", flush=True)


def run() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sftvsrl-bench-api-"))
    try:
        bench_api_latency(tmp)
        bench_eval_start(tmp)
        if os.environ.get("SFTVSRL_BENCH_SKIP_MODEL") != "1":
            bench_local_eval_concurrency(tmp)
            bench_realistic_eval(tmp)
            bench_eval_concurrency(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
