"""Shared test helpers: the conformance vectors in ../shared/conformance (skipped when absent)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `python -m app.cli` with Python's default Ctrl-C handler: a test that sends SIGINT starts this,
# because the tests may themselves run with SIGINT ignored (a shell's background job, nohup, CI),
# and a child inherits that (uvicorn then restores "ignored" and its re-raised SIGINT vanishes)
INTERRUPTIBLE_CLI = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                     "from app.cli import main; sys.exit(main())"]
CONFORMANCE = ROOT.parent / "shared" / "conformance"


# The longest test files start first, so that `make test`'s two workers (one file each at a time,
# `--dist loadfile`) finish together instead of one waiting on a long file picked up last. Only the
# order changes; a file missing here keeps its place after these.
LONG_FILES = ("test_talk_browser.py", "test_ui_browser.py", "test_reliability.py", "test_public_ui.py",
              "test_app_api.py", "test_pipeline.py", "test_findings_browser.py",
              "test_ui_vision_browser.py", "test_vision_train.py", "test_shards.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))   # stable: order within a file kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (`item.rep_call`, …): fixtures that keep evidence of a
    failure (the browser tests' screenshots) look at it while tearing down."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def load_conformance(name: str) -> list[dict]:
    """Lines of ../shared/conformance/<name>; skips the calling test when the folder is missing."""
    path = CONFORMANCE / name
    if not path.exists():
        pytest.skip(f"conformance vectors not found: {path} (clone ../shared beside the repo)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama checkpoint (tokenizer trained on a GP/V-IRL corpus, chat template),
    built by `models.tiny.build_tiny_llama` once per test session; nothing is downloaded."""
    pytest.importorskip("torch")
    from models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "tiny", seed=0)



@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for this test session (see tests/pg_server.py); skips when the
    Debian `postgresql` binaries or psycopg are missing (`make test` installs both)."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (the 'postgres' extra)")
    from pg_server import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql, or set SFTVSRL_PG_BIN)")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """An empty episode store on each backend: a SQLite file, and a new PostgreSQL database."""
    from app.store import Store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'eps.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    yield s
    s.close()
