"""REST API routers, all mounted under `/api` by `app.main.create_app`. Routers stay thin: they
validate (schemas), call the engines / runner / store / evaluation, and shape the response."""
from __future__ import annotations

from fastapi import APIRouter

from . import episodes, evaluations, games, system


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api")
    for module in (system, games, episodes, evaluations):
        router.include_router(module.router)
    return router
