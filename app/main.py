"""The FastAPI application: `create_app(settings)` wires the store, the model pool, live episode
groups and evaluations into one app. API routers live under `/api`, OpenAPI docs at `/docs`;
`/` is left for the UI (issue 7 mounts Gradio there) and serves a small placeholder page until then.

Cross-cutting concerns owned here: request body size limit (413), clear JSON errors (4xx with a
`detail` message, 500 without a stack trace), start-up recovery (episodes left `running` by a
crash become `interrupted`), and shutdown (running groups and evaluations are cancelled).
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .live import LiveRegistry, ModelPool
from .settings import Settings
from .store import Store, StoreError

log = logging.getLogger("sftvsrl.app")


@dataclass
class AppContext:
    settings: Settings
    store: Store
    pool: ModelPool
    live: LiveRegistry
    evals: dict[str, asyncio.Task] = field(default_factory=dict)


class BodyLimit:
    """ASGI middleware: reject request bodies over `limit` bytes with 413 (declared or streamed)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        if declared is not None or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        # A streamed (chunked) body: read it here, up to the limit, then hand it on in one piece.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _too_large(send, self.limit)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list, then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _too_large(send, limit: int) -> None:
    import json

    body = json.dumps({"detail": f"request body too large (limit {limit} bytes)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>SFT vs RL playground</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto"><h1>SFT-vs-RL playground</h1>
<p>The user interface is not installed yet. The REST API is live: see <a href="/docs">/docs</a>.</p></body></html>"""


def create_app(settings: Settings | None = None, *, pool: ModelPool | None = None, store: Store | None = None,
               placeholder: bool = True) -> FastAPI:
    """The app. Pass `placeholder=False` when a UI is mounted at `/` (e.g. `gr.mount_gradio_app`)."""
    from . import __version__
    from .api import api_router

    settings = settings or Settings.from_env()
    store = store or Store(settings.db_url)
    recovered = store.mark_interrupted()
    if recovered:
        log.warning("%d episode(s) left running by a previous process marked interrupted", recovered)
    pool = pool or ModelPool.from_file(settings.models_config, settings.model_concurrency)
    ctx = AppContext(settings, store, pool, LiveRegistry(store))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await ctx.live.shutdown()
        for t in ctx.evals.values():
            t.cancel()
        await asyncio.gather(*ctx.evals.values(), return_exceptions=True)
        await pool.aclose()

    app = FastAPI(title="SFT-vs-RL playground API", version=__version__, lifespan=lifespan,
                  description="GeneralPoints and V-IRL episodes, models, stored episodes and evaluations "
                              "(Chu et al. 2025, 'SFT Memorizes, RL Generalizes').")
    app.state.ctx = ctx
    app.include_router(api_router())

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    if placeholder:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def index() -> str:
            return PLACEHOLDER

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
