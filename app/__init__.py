"""Application layer: CLI, FastAPI backend, episode runner, evaluation, episode store and UI."""
