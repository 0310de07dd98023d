"""Shared test helpers: the conformance vectors in ../shared/conformance (skipped when absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT.parent / "shared" / "conformance"


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

