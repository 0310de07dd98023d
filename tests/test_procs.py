"""`models.procs.ManagedServer`: a server started with `die_with_parent` does not outlive a
supervisor killed with SIGKILL (what `sftvsrl vllm up` does for its vLLM servers, which run in their
own sessions where the supervisor's process group signal cannot reach them)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

SUPERVISOR = """
import sys, time
from models.procs import ManagedServer
server = ManagedServer("child", [sys.executable, "-c", "import time; time.sleep(3600)"], "http://127.0.0.1:9/",
                       die_with_parent=True).start()
print(server.proc.pid, flush=True)
time.sleep(3600)
"""


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a container's pid 1 may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_server_dies_with_its_sigkilled_supervisor():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True, env=env)
    child = int(sup.stdout.readline())
    try:
        assert _running(child)
        sup.kill()          # SIGKILL: no handler, no cleanup in the supervisor
        sup.wait()
        # the kernel sends the child SIGTERM on its parent's death; wait for that, not for a clock
        # (the bound only turns a broken feature into a failure instead of a hang)
        for _ in range(6000):
            if not _running(child):
                break
            time.sleep(0.02)
        assert not _running(child), "the server outlived its SIGKILLed supervisor"
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)
        if sup.poll() is None:
            sup.kill()
