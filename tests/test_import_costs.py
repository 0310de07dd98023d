"""What the common entry points do NOT import: the heavy or optional libraries stay lazy (imported in
the function that needs them, with a `# lazy:` comment saying why), so `sftvsrl --help`, the cheap CLI
commands, the API server and the game engines never pay for torch, transformers, gradio or matplotlib.

Each entry point runs in a fresh interpreter (the test process has imported everything already) and
reports the top-level packages in `sys.modules` when it exits.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# Machine learning, UI and optional-extra libraries: none of the entry points below loads any.
ML = {"torch", "transformers", "tokenizers", "safetensors", "datasets", "pyarrow", "trl", "vllm"}
UI = {"gradio", "matplotlib", "playwright", "pandas"}
OPTIONAL = {"psycopg", "pyrosm"}
HEAVY = ML | UI | OPTIONAL
# The web stack (the `web`/`models` extras): the CLI's cheap commands and the engines never load it.
WEB = {"fastapi", "starlette", "pydantic", "uvicorn", "httpx"}

# The probe: run `code` with `argv`, then write the loaded top-level packages to the file named in
# $SFTVSRL_MODULES_OUT (at exit, so a command that calls sys.exit is measured too).
PROBE = """
import atexit, json, os, sys
def _report():
    with open(os.environ["SFTVSRL_MODULES_OUT"], "w") as fh:
        json.dump(sorted({m.split(".")[0] for m in sys.modules}), fh)
atexit.register(_report)
"""
CLI = "import runpy, sys; sys.argv = ['sftvsrl', *{argv!r}]; runpy.run_module('app.cli', run_name='__main__')"

ENTRY_POINTS = {
    # name: (code, a package it loads (the probe saw it run), packages it must not load)
    "import game.tasks": ("import game.tasks", "game", HEAVY | WEB | {"PIL", "models", "app"}),
    "import models.backends": ("import models.backends", "models", HEAVY | WEB | {"PIL"}),
    "app.main.create_app()": ("import app.main; app.main.create_app()", "fastapi", HEAVY | {"PIL", "uvicorn", "httpx"}),
    "sftvsrl --help": (CLI.format(argv=["--help"]), "app", HEAVY | WEB | {"PIL"}),
    "sftvsrl gp deal --seed 1": (CLI.format(argv=["gp", "deal", "--seed", "1"]), "app", HEAVY | WEB | {"PIL"}),
    "sftvsrl virl routes": (CLI.format(argv=["virl", "routes"]), "app", HEAVY | WEB | {"PIL"}),
    "sftvsrl models --no-health": (CLI.format(argv=["models", "--no-health"]), "app", HEAVY | WEB | {"PIL"}),
}


def loaded_packages(code: str, tmp_path) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running `code` (cwd: the repo)."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "SFTVSRL_MODULES_OUT": str(out), "SFTVSRL_DATA_DIR": str(tmp_path / "data"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE + code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_entry_point_leaves_heavy_libraries_unloaded(name, tmp_path):
    code, seen, forbidden = ENTRY_POINTS[name]
    loaded = loaded_packages(code, tmp_path)
    assert seen in loaded
    assert not loaded & forbidden, f"{name} imports {sorted(loaded & forbidden)}"


def test_the_probe_sees_a_heavy_import(tmp_path):
    assert "json" in loaded_packages("import json", tmp_path)
    assert "PIL" in loaded_packages("import game.gp.render", tmp_path)
