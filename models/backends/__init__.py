"""Model backends behind one async streaming interface (`base.Backend`): `openai` (any
OpenAI-compatible server over HTTP) and `local` (a checkpoint loaded in-process)."""
from __future__ import annotations

from .base import Backend, Completion, Health, TextDelta
from .local import LocalBackend

__all__ = ["Backend", "Completion", "Health", "TextDelta", "make_backend"]


def make_backend(kind: str, name: str, **options) -> Backend:
    """A backend by kind (`openai` or `local`); options are the backend's dataclass fields."""
    if kind == "openai":
        # lazy: httpx is optional (the `models`/`web` extras); only OpenAI-compatible models need it
        from .openai import OpenAIBackend

        return OpenAIBackend(name=name, **options)
    if kind == "local":
        return LocalBackend(name=name, **options)
    raise ValueError(f"unknown backend {kind!r}: use 'openai' or 'local'")
