"""Request-scoped access to the app context (settings, store, model pool, live groups, evals), the
caller (`app.access.Caller`: who asks, as every service-layer operation needs it), and service-layer
refusals as HTTP errors."""
from __future__ import annotations

from fastapi import HTTPException, Request


# Both are `async` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
# hop per request per dependency (most of a cheap request's cost under load).
async def ctx(request: Request):
    return request.app.state.ctx


async def caller(request: Request):
    """The request's caller: its address, the game tokens and the operator token it presents."""
    return request.app.state.ctx.access.caller_of(request)


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found")


def bad_request(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


def http_error(exc) -> HTTPException:
    """A service-layer refusal as an HTTP error (its status; 429 and 503 carry `Retry-After`)."""
    retry = getattr(exc, "retry_after", None)
    return HTTPException(status_code=getattr(exc, "status", 400), detail=str(exc),
                         headers={"Retry-After": str(retry)} if retry else None)
