"""`sftvsrl serve` start-up: a busy port fails at once with a clear message, before "serving on"."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import ROOT


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
