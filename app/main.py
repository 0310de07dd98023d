"""The FastAPI application: `create_app(settings)` wires the store, the model pool, live episode
groups and evaluations into one app. API routers live under `/api`, OpenAPI docs at `/docs`;
`/` is left for the UI (issue 7 mounts Gradio there) and serves a small placeholder page until then.

The API docs (`/docs` Swagger UI, `/redoc` ReDoc) are served from local files (the
`fastapi-offline` package ships them) without web fonts: nothing is fetched from the internet.

Cross-cutting concerns owned here:
- the edge guard (`EdgeGuard`, every HTTP request, API and UI alike): request head limit 431, body
  limit 413, a body that does not arrive within `BODY_TIMEOUT_S` 408, and JSON bodies — every content
  type FastAPI parses as JSON (`application/json`, any `application/*+json`) — with NaN/Infinity,
  lone surrogates or over-long numbers refused with 422;
- security headers on every response (`SECURITY_HEADERS`: a Content-Security-Policy that allows
  only this origin and no framing, `X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options`);
- game tokens never reach the access log (`redact_access_log`);
- clear JSON errors (4xx with a `detail` message, 500 without a stack trace);
- one server per SQLite store (`Store.claim_single_server`: a second server on the same file refuses
  to start and says why; replicas need PostgreSQL), and start-up recovery (episodes left `running`
  by a crash become `interrupted`);
- start-up (the CPU work tables warmed here and in the worker pool, so no request builds them) and
  shutdown (running groups and evaluations are cancelled, the worker processes stopped and reaped).
"""
from __future__ import annotations

import asyncio
import email.message
import json
import logging
import math
import re
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from . import __version__, jobs, sources
from . import workers as workers_mod
from .access import Access, load_secret
from .api import api_router
from .context import AppContext
from .live import LiveRegistry, ModelPool
from .settings import Settings
from .store import Store, StoreError

log = logging.getLogger("sftvsrl.app")


BODY_TIMEOUT_S = 30.0   # a request body must arrive within this (a slow upload holds a connection)


class EdgeGuard:
    """ASGI middleware for every HTTP request: a request head over `header_limit` bytes is a 431;
    a body over `limit` bytes (declared or streamed) a 413, one that does not arrive within
    `BODY_TIMEOUT_S` a 408; a JSON body (every content type FastAPI parses as JSON) that Python's
    `json` would accept but no client should send — NaN/Infinity, lone surrogates, integers over
    4,300 digits — a 422 naming the problem. Bodies are read here once and replayed."""

    def __init__(self, app, limit: int, header_limit: int = 16 * 1024) -> None:
        self.app, self.limit, self.header_limit = app, limit, header_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_headers = scope.get("headers") or []
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(k) + len(v) + 4 for k, v in raw_headers)
        if head > self.header_limit:
            return await _error(send, 431, f"request head too large (limit {self.header_limit} bytes)")
        headers = dict(raw_headers)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        return await self.app(scope, _replay([message]), send)
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.limit:
                        return await _too_large(send, self.limit)
        except TimeoutError:
            return await _error(send, 408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s")
        if body and parsed_as_json(headers.get(b"content-type")):
            problem = json_problem(body)
            if problem:
                return await _error(send, 422, problem)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def parsed_as_json(content_type: bytes | None) -> bool:
    """Whether FastAPI parses a body with this content type as JSON (its own test: an
    `application/json` or `application/*+json` media type, parameters ignored). A body without
    a content type is checked too: cheap, and a framework default may parse it."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def json_problem(body: bytes) -> str | None:
    """Why this JSON body is refused (None: fine, or malformed JSON left to the app's own 422)."""
    def constant(name: str):
        raise _Refused(f"{name} is not a valid JSON number (send a finite number)")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the request body is not valid UTF-8"
    try:
        doc = json.loads(text, parse_constant=constant)
    except _Refused as exc:
        return str(exc)
    except ValueError as exc:
        if "int" in str(exc) and "digits" in str(exc):
            return "a number in the request has too many digits"
        return None  # malformed JSON: FastAPI answers 422 with the position
    except RecursionError:
        return "the request body is nested too deeply"
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a string in the request holds a lone surrogate (\\ud800-\\udfff); send valid Unicode"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers in the request must be finite (1e999 overflows to infinity)"
    return None


class _Refused(ValueError):
    pass


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
    await _error(send, 413, f"request body too large (limit {limit} bytes)")


async def _error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# The UI (Gradio) runs inline scripts and its event handlers' `js` through `new Function`, and ReDoc
# starts a worker from a blob: so scripts allow those; everything else comes from this origin only,
# and no other site may frame a page (clickjacking). A browser test drives every tab under it.
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "media-src 'self' data: blob:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "frame-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """ASGI middleware: `SECURITY_HEADERS` on every HTTP response (API, docs, UI, static files,
    errors), unless the app set that header itself."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _RedactTokens(logging.Filter):
    """Replaces the value of every `token=` query parameter in an access-log line by `***`."""

    pattern = re.compile(r"((?:^|[?&])(?:token|admin_token)=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = self.pattern.sub(r"\1***", record.msg)
        return True


def redact_access_log() -> None:
    """Keep game tokens (`?token=` of EventSource URLs) out of uvicorn's access log (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactTokens) for f in logger.filters):
        logger.addFilter(_RedactTokens())


PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>SFT vs RL playground</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto"><h1>SFT-vs-RL playground</h1>
<p>The user interface is not installed yet. The REST API is live: see <a href="/docs">/docs</a>.</p></body></html>"""


DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI) -> None:
    """`/docs` and `/redoc` from the Swagger UI and ReDoc files in the `fastapi-offline` package."""
    assets = Path(fastapi_offline.__file__).parent / "static"

    @app.get(DOCS_ASSETS + "/redoc.standalone.js", include_in_schema=False)
    async def redoc_js():
        # ReDoc's menu shows a logo from its CDN: point it at an inline image so nothing leaves.
        return Response(_redoc_js(str(assets / "redoc.standalone.js")), media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request):
        r = root(request)
        return get_swagger_ui_html(
            openapi_url=r + str(app.openapi_url), title=app.title + " — Swagger UI",
            oauth2_redirect_url=r + "/docs/oauth2-redirect",
            swagger_js_url=f"{r}{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{r}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{r}{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None})  # no badge from the online validator

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        r = root(request)
        return get_redoc_html(openapi_url=r + str(app.openapi_url), title=app.title + " — ReDoc",
                              redoc_js_url=f"{r}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{r}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


# The vendored ReDoc bundle references its logo by an absolute address; `_redoc_js` replaces every
# absolute image address in it with an inline blank image, so the docs page never fetches one (a
# browser test asserts zero outside requests).
OUTSIDE_IMAGE = re.compile(r"https?://[^\"'\s)]+\.(?:svg|png|gif|jpe?g)")
BLANK_SVG = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E"


@lru_cache(maxsize=1)
def _redoc_js(path: str) -> bytes:
    return OUTSIDE_IMAGE.sub(BLANK_SVG, Path(path).read_text(encoding="utf-8")).encode("utf-8")


async def _when_ready(warming, on_ready) -> None:
    if warming is not None:
        await asyncio.gather(warming, return_exceptions=True)
    if on_ready is not None:
        on_ready()


def create_app(settings: Settings | None = None, *, pool: ModelPool | None = None, store: Store | None = None,
               placeholder: bool = True) -> FastAPI:
    """The app. Pass `placeholder=False` when a UI is mounted at `/` (e.g. `gr.mount_gradio_app`)."""
    settings = settings or Settings.from_env()
    store = store or Store(settings.db_url)
    store.claim_single_server()   # before recovery: a second server must not touch the first's games
    recovered = store.mark_interrupted()
    if recovered:
        log.warning("%d episode(s) left running by a previous process marked interrupted", recovered)
    pool = pool or ModelPool.from_file(settings.models_config, settings.model_concurrency)
    access = Access(load_secret(settings.data_dir), public=settings.public, gallery=settings.show_gallery,
                    admin_token=settings.admin_token, max_live_groups=settings.max_live_games,
                    max_games_per_client=settings.max_games_per_client)
    sources.configure(settings)

    ctx = AppContext(settings, store, pool, LiveRegistry(store, unwatched_s=settings.unwatched_s), access,
                     workers_mod.configure(settings.cpu_workers, settings.cpu_timeout_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # workers up and the inline jobs' tables built before the first request
        assert ctx.workers is not None  # create_app gives the app its pool
        await asyncio.gather(asyncio.to_thread(ctx.workers.warm), asyncio.to_thread(jobs.warm))
        # Warm start: the default models load (and answer once) while the server already serves;
        # `app.state.on_ready` (e.g. `sftvsrl serve`'s "serving on") runs once they are warm.
        warming = asyncio.create_task(pool.warm()) if settings.warm_models else None
        announce = asyncio.create_task(_when_ready(warming, getattr(app.state, "on_ready", None)))
        yield
        for t in (warming, announce):
            if t is not None:
                t.cancel()
        await ctx.live.shutdown()
        for t in ctx.evals.values():
            t.cancel()
        await asyncio.gather(*ctx.evals.values(), return_exceptions=True)
        await pool.aclose()
        await asyncio.to_thread(ctx.workers.close)

    app = FastAPI(title="SFT-vs-RL playground API", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # served offline below
                  description="GeneralPoints and V-IRL episodes, models, stored episodes and evaluations "
                              "(Chu et al. 2025, 'SFT Memorizes, RL Generalizes').")
    app.state.ctx = ctx
    app.include_router(api_router())
    _offline_docs(app)

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

    app.add_middleware(EdgeGuard, limit=settings.max_body_bytes, header_limit=settings.max_header_bytes)
    app.add_middleware(SecurityHeaders)   # outermost: errors of the guard get the headers too
    redact_access_log()
    return app
