"""Router-friendly requests: every model request of an episode carries `X-Session-ID: <episode id>`,
and a real session-sticky router (vllm-router, `consistent_hash` policy, a registry package) in
front of two of our OpenAI-compatible servers keeps each episode on one replica. Real processes on
loopback: two `models.serve_openai` servers with the tiny checkpoint and the router; each server
counts the requests it saw per session (`/stats/sessions`)."""
from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("torch")

from app.runner import ModelPlayer, play_paired
from game.tasks import Instance
from models.backends.openai import OpenAIBackend
from models.decoding import DecodingSettings
from models.procs import ManagedServer, free_port, our_server

SHORT = DecodingSettings(max_tokens=6, temperature=0.0)
DEALS = ["HKC5D2C4", "SAH2D3C4", "D5C5H5S5"]


def _router_binary() -> str | None:
    beside = Path(sys.executable).parent / "vllm-router"
    return str(beside) if beside.exists() else shutil.which("vllm-router")


@pytest.fixture(scope="module")
def replicas(tiny_llama_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replicas")
    servers = [our_server(tiny_llama_dir, "tiny", log_path=logs / f"r{i}.log", threads=1).start() for i in range(2)]
    try:
        for s in servers:
            assert s.wait_healthy(), f"replica did not come up:\n{s.log_tail()}"
        yield servers
    finally:
        for s in servers:
            s.stop()


def _base(server: ManagedServer) -> str:
    return server.health_url.rsplit("/health", 1)[0]


def _sessions(server: ManagedServer) -> dict[str, int]:
    return httpx.get(_base(server) + "/stats/sessions", timeout=10, trust_env=False).json()


def _play_groups(base_url: str, store) -> dict[str, int]:
    """Three paired groups (6 episodes) played concurrently through `base_url`; episode id -> steps."""
    async def go():
        backends = [OpenAIBackend(name="tiny", base_url=base_url) for _ in range(2)]

        async def group(deal):
            players = [ModelPlayer(f"p{i}", b, SHORT) for i, b in enumerate(backends)]
            return [e async for e in play_paired(players, Instance("gp-l", {"deal_id": deal, "rule": "face10"}), store)]

        groups = await asyncio.gather(*(group(d) for d in DEALS))
        for b in backends:
            await b.aclose()
        return [e for g in groups for e in g]

    events = asyncio.run(go())
    finished = {e.episode_id: e.n_steps for e in events if e.type == "finished"}
    assert len(finished) == 6 and all(e.type != "finished" or e.status == "finished" for e in events)
    return finished


def test_every_request_of_an_episode_carries_its_session_header(replicas, tmp_path):
    from app.store import Store

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    before = _sessions(replicas[0])
    steps = _play_groups(_base(replicas[0]), store)
    store.close()
    seen = {k: v for k, v in _sessions(replicas[0]).items() if k not in before}
    assert seen == steps  # one header value per episode, on every one of its requests (n_steps each)
    assert all(n >= 1 for n in steps.values())


def test_router_keeps_each_episode_on_one_replica(replicas, tmp_path):
    binary = _router_binary()
    if binary is None:
        pytest.skip("vllm-router is not installed (pip install vllm-router: the 'router' extra)")
    from app.store import Store

    port = free_port()
    router = ManagedServer("router", [binary, "--host", "127.0.0.1", "--port", str(port), "--policy", "consistent_hash",
                                      "--worker-urls", *(_base(r) for r in replicas), "--log-level", "warning"],
                           f"http://127.0.0.1:{port}/health", log_path=tmp_path / "router.log").start()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert router.wait_healthy(), f"router did not come up:\n{router.log_tail()}"
        before = [_sessions(r) for r in replicas]
        steps = _play_groups(f"http://127.0.0.1:{port}", store)
        seen = [{k: v for k, v in _sessions(r).items() if k not in b} for r, b in zip(replicas, before)]
    finally:
        router.stop()
        store.close()
    for eid, n in steps.items():
        served_by = [i for i, s in enumerate(seen) if eid in s]
        assert len(served_by) == 1, f"episode {eid} was split across replicas {served_by}"
        assert seen[served_by[0]][eid] == n  # every turn of the episode went to that replica
    assert sum(len(s) for s in seen) == len(steps)
