"""Warm start: `sftvsrl serve` with the default models (as `make run` starts it); the time to first
token of the first Run after it prints "serving on" (the landing page's hand, SFT and RL side by
side over the API, as the page's Run plays it), against a warm Run of the same hand; and the same
first Run without the warm start (`SFTVSRL_WARM_MODELS=0`: checkpoints load on first use).
Target: the first Run within 2x a warm one."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import report

ROOT = Path(__file__).resolve().parents[1]


def _serve(port: int, data: Path, warm: bool):
    env = dict(os.environ, SFTVSRL_DATA_DIR=str(data), SFTVSRL_WARM_MODELS="1" if warm else "0",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.perf_counter()
    for line in proc.stdout:   # the server's own announcement is the event waited for
        if "serving on" in line:
            return proc, time.perf_counter() - start
    raise RuntimeError("the server exited before 'serving on'")


def _run(base: str, params: dict) -> list[float]:
    """One Run of SFT and RL on the hand; each model's time to first token of its first reply."""
    import httpx

    r = httpx.post(f"{base}/api/episodes", json={"task": "gp-l", "instance": params,
                                                 "participants": [{"model": "sft"}, {"model": "rl"}]},
                   timeout=600, trust_env=False)
    r.raise_for_status()
    body = r.json()
    first: dict[str, float] = {}
    with httpx.stream("GET", f"{base}/api/groups/{body['group_id']}/events", params={"token": body["token"]},
                      timeout=600, trust_env=False) as events:
        for line in events.iter_lines():
            if not line.startswith("data:"):
                continue
            ev = json.loads(line[5:])
            if ev.get("type") == "step" and ev.get("call") == 1:
                first[ev["episode_id"]] = ev["timing"]["time_to_first_token_s"]
            if ev.get("type") == "group_finished":
                break
    return list(first.values())


def run() -> None:
    from app.ui import landing_instances
    from models.procs import free_port

    params = landing_instances()["gp-l"].params
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for warm in (True, False):
            port = free_port()
            proc, up = _serve(port, Path(tmp) / f"data-{warm}", warm)
            try:
                base = f"http://127.0.0.1:{port}"
                first = max(_run(base, params))
                warm_runs = [max(_run(base, params)) for _ in range(3)]
                results[warm] = (up, first, statistics.median(warm_runs))
            finally:
                proc.terminate()
                proc.wait(30)
    up, first, warm_ttft = results[True]
    report("first Run after 'serving on': TTFT (slower model)", first * 1000, "ms", baseline=warm_ttft * 1000,
           baseline_name="warm Run", target="<= 2x warm", higher_is_better=True)  # prints first / warm
    cold_up, cold_first, _ = results[False]
    report("same, without the warm start (loads on first use)", cold_first * 1000, "ms",
           baseline=warm_ttft * 1000, baseline_name="warm Run", higher_is_better=True)
    print(f"    ('serving on' after {up:.1f} s with the warm start, {cold_up:.1f} s without)", flush=True)
