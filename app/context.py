"""`AppContext`: what one running app (or one CLI command) shares — settings, the episode store, the
model pool, live episode groups, the public-demo access rules, the worker pool and running
evaluations. `app.main` builds it for a server, `app.services.cli_context` for a CLI command; the
service layer takes it as its first argument."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .access import Access
from .live import LiveRegistry, ModelPool
from .settings import Settings
from .store import Store
from .workers import WorkerPool


@dataclass
class AppContext:
    settings: Settings
    store: Store
    pool: ModelPool
    live: LiveRegistry
    access: Access | None = None        # None: no public-demo rules (a CLI context)
    workers: WorkerPool | None = None
    evals: dict[str, asyncio.Task] = field(default_factory=dict)
