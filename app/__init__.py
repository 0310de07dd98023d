"""Application layer: CLI, FastAPI backend, episode runner, evaluation, episode store and UI."""

__version__ = "0.1.0"
