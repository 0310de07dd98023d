"""`sftvsrl serve` start-up and stop: a busy port fails at once with a clear message, before "serving
on"; Ctrl-C (SIGINT), even during the models' warm start, stops it cleanly (exit 0, no traceback)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from conftest import INTERRUPTIBLE_CLI, ROOT
from models.procs import ManagedServer, free_port


def test_busy_port_fails_fast_with_a_clear_message(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {**os.environ, "SFTVSRL_DATA_DIR": str(tmp_path / "data"),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr + proc.stdout
    assert "--port" in proc.stderr + proc.stdout
    assert "serving on" not in proc.stdout and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # it stopped before opening the store


def test_ctrl_c_during_the_warm_start_stops_cleanly(tmp_path):
    """SIGINT as soon as the server answers (the default models are still loading): uvicorn's
    shutdown runs, the CLI says it stopped and exits 0 (it re-raised the KeyboardInterrupt before:
    a traceback and exit -2)."""
    port = free_port()
    srv = ManagedServer("app", [*INTERRUPTIBLE_CLI, "serve", "--no-ui", "--port", str(port)],
                        f"http://127.0.0.1:{port}/api/health", log_path=tmp_path / "server.log",
                        env={"PYTHONPATH": str(ROOT), "SFTVSRL_DATA_DIR": str(tmp_path / "data"),
                             "SFTVSRL_WARM_MODELS": "1"})
    srv.start()
    try:
        assert srv.wait_healthy(), srv.log_tail()
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(300) == 0, srv.log_tail(40)     # a hang bound, not a timing
    finally:
        srv.stop()
    log = (tmp_path / "server.log").read_text()
    assert "sftvsrl: stopped" in log and "Traceback" not in log, log[-3000:]
