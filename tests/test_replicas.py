"""App replicas on one PostgreSQL: two real `sftvsrl serve` processes share a database on a real
PostgreSQL server. A replica starting while another plays leaves its running episodes alone; an
episode played on one is read from the other; a stored group's SSE stream replays from either;
an evaluation run started on one is followed from the other."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("torch")

from models.procs import ManagedServer, free_port

ROOT = Path(__file__).resolve().parents[1]
GP = {"deal_id": "HKC5D2C4", "rule": "face10"}


def _start(tmp: Path, name: str, db_url: str, cfg: Path) -> ManagedServer:
    port = free_port()
    srv = ManagedServer(name, [sys.executable, "-m", "app.cli", "serve", "--no-ui", "--port", str(port),
                               "--models", str(cfg), "--database-url", db_url],
                        f"http://127.0.0.1:{port}/api/health", env={"PYTHONPATH": str(ROOT), "SFTVSRL_WARM_MODELS": "0",
                                                                     "SFTVSRL_DATA_DIR": str(tmp / name)},
                        log_path=tmp / f"{name}.log").start()
    assert srv.wait_healthy(), f"{name} did not start:\n{srv.log_tail()}"
    srv.base = f"http://127.0.0.1:{port}"
    return srv


def _sse(client: httpx.Client, url: str, until=lambda ev: False) -> list[dict]:
    out = []
    with client.stream("GET", url) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if out[-1]["type"] == "group_finished" or until(out[-1]):
                    break
    return out


def _steps(events: list[dict]) -> list[tuple]:
    return sorted((e["episode_id"], e["call"], e["output"], e["reward"]) for e in events if e["type"] == "step")


def test_two_replicas_on_one_postgres_share_episodes_and_runs(postgres_server, tiny_llama_dir, tmp_path):
    url = postgres_server.create_database("replicas")
    cfg = tmp_path / "models.toml"
    cfg.write_text(f'[models.sft]\nbackend = "local"\npath = "{tiny_llama_dir}"\n'
                   f'[models.sft.decoding]\nmax_tokens = 8\ntemperature = 0.0\n')
    a = _start(tmp_path, "a", url, cfg)
    b = None
    try:
        with httpx.Client(base_url=a.base, trust_env=False, timeout=300) as ca:
            r = ca.post("/api/episodes", json={"task": "gp-l", "instance": GP,
                                               "participants": [{"human": True, "name": "alice"}, {"model": "sft"}]})
            assert r.status_code == 201, r.text
            group = r.json()
            alice = next(e["episode_id"] for e in group["episodes"] if e["participant"] == "alice")
            # b starts while alice's episode runs on a: it must not mark a live replica's episode interrupted
            b = _start(tmp_path, "b", url, cfg)
            with httpx.Client(base_url=b.base, trust_env=False, timeout=300) as cb:
                assert cb.get(f"/api/episodes/{alice}").json()["status"] == "running"
                assert ca.post(f"/api/episodes/{alice}/submit", json={"text": "10+5*2+4"},
                               headers={"X-Game-Token": group["token"]}).status_code == 200
                live = _sse(ca, group["events_url"])  # a: the live group to its end
                assert live[-1]["type"] == "group_finished"
                # b reads the episode played on a, with its steps
                ep = cb.get(f"/api/episodes/{alice}").json()
                assert ep["status"] == "finished" and ep["success"] and "10+5*2+4" in ep["steps"][0]["output"]
                listed = cb.get("/api/episodes", params={"group_id": group["group_id"]}).json()["episodes"]
                assert sorted(e["participant"] for e in listed) == ["alice", "sft"]
                # the stored group's SSE stream replays from b (from the store) as a streamed it live
                replay_b = _sse(cb, group["events_url"])
                assert _steps(replay_b) == _steps(live) and len(_steps(live)) >= 2
                assert [e["type"] for e in replay_b][:2] == ["started", "started"]
                # an evaluation run started on a is followed, and its summary read, from b
                r = ca.post("/api/evaluations", json={"task": "gp-l", "models": ["sft"], "episodes": 2,
                                                      "max_tokens": 8, "concurrency": 2})
                assert r.status_code == 202, r.text
                run_id = r.json()["id"]
                deadline = time.monotonic() + 300
                run = cb.get(f"/api/evaluations/{run_id}").json()
                while run["status"] == "running" and time.monotonic() < deadline:
                    time.sleep(0.5)  # polling the shared database for the run's end (the condition, not a guess)
                    run = cb.get(f"/api/evaluations/{run_id}").json()
                assert run["status"] == "finished", run
                assert run["summary"] == ca.get(f"/api/evaluations/{run_id}").json()["summary"]
                assert run_id in [x["id"] for x in cb.get("/api/evaluations").json()]
    finally:
        for srv in (a, b):
            if srv is not None:
                srv.stop()
