"""Server subprocesses: pick a free loopback port, start a server, wait for its health URL, stop it
cleanly (SIGINT, then SIGTERM, then SIGKILL). Shared by `sftvsrl vllm up`, `sftvsrl models serve`,
the tests and the benchmarks."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ManagedServer:
    """One server process. `start()` launches it in its own process group; `wait_healthy()` polls
    `health_url` until it answers 200, the process dies, or the timeout passes. The default timeout
    (540 s, under the test suite's 600 s per-test limit) only bounds a hung start; it is no
    performance check, so a slow start on a busy machine never fails a test."""

    name: str
    cmd: Sequence[str]
    health_url: str
    env: dict[str, str] | None = None
    log_path: Path | None = None
    cwd: Path | None = None
    # Linux: the server gets SIGTERM when the thread that started it dies (prctl PR_SET_PDEATHSIG),
    # so a supervisor killed with SIGKILL (which no handler sees) leaves no orphan in its own session.
    # Only for a server started from a thread that lives as long as it should (a CLI's main thread).
    die_with_parent: bool = False
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> "ManagedServer":
        env = dict(os.environ)
        env.update(self.env or {})
        log = open(self.log_path, "ab") if self.log_path else None
        self.proc = subprocess.Popen(list(self.cmd), env=env, stdout=log if log is not None else subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd,
                                     preexec_fn=_die_with_parent if self.die_with_parent else None)
        if log is not None:
            log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 540.0, interval: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                return False
            try:
                if httpx.get(self.health_url, timeout=2.0, trust_env=False).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(interval)
        return False

    def log_tail(self, n: int = 20) -> str:
        if not self.log_path or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the process group: SIGINT, then SIGTERM, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace / 2), (signal.SIGKILL, grace)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def die_with_parent(sig: int = signal.SIGTERM, parent_pid: int | None = None) -> None:
    """Ask Linux to send this process `sig` when the thread that started it dies (no-op elsewhere).
    Called in a child (before exec, or first thing after it); with `parent_pid`, a parent that is
    already gone (it died before the request was made) gets the same answer at once."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)   # PR_SET_PDEATHSIG = 1
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent thread dies."""
    die_with_parent(signal.SIGTERM)


def our_server(path: "str | Path", name: str, port: int | None = None, *, log_path: Path | None = None,
               python: str | None = None, threads: int | None = None) -> ManagedServer:
    """A `models.serve_openai` server for a checkpoint, on a free loopback port (not started).
    `threads` caps the server's torch/OpenMP threads."""
    port = port or free_port()
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return ManagedServer(name, [python or sys.executable, "-m", "models.serve_openai", str(path), "--port", str(port),
                                "--name", name], f"http://127.0.0.1:{port}/health", env=env, log_path=log_path)
