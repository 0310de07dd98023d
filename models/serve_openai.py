"""A small OpenAI-compatible server for checkpoints run by the `local` backend.

Endpoints: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions` (`stream: true` → SSE
chunks in the OpenAI format with a final usage chunk; `stream: false` → one JSON object), and
`GET /stats` (per model: requests, busy, tokens of the last generation), and `GET /stats/sessions`
(requests per `X-Session-ID` header for the most recent 1,024 sessions: which replica served which
episode behind a router).
Images arrive as `image_url` parts holding base64 data URLs (remote URLs are refused: the server
never fetches anything). Used by the default tests as a real loopback server and by users:
`sftvsrl models serve PATH --port 8001` or `python -m models.serve_openai PATH --port 8001`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .backends.base import SESSION_HEADER, Backend, Completion
from .backends.local import LocalBackend
from .decoding import DecodingSettings


MAX_SESSIONS = 1024


class RequestError(ValueError):
    """A malformed request (HTTP 400)."""


def parse_messages(raw: Any) -> tuple[list[dict], list[bytes]]:
    """OpenAI chat messages → our content-list messages and the decoded image bytes, in order."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty list")
    messages, images = [], []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise RequestError("each message needs a role of system, user or assistant")
        content = m.get("content")
        parts: list[dict] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            for p in content:
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "text":
                    parts.append({"type": "text", "text": str(p.get("text", ""))})
                elif kind == "image_url":
                    url = (p.get("image_url") or {}).get("url", "") if isinstance(p.get("image_url"), dict) \
                        else str(p.get("image_url", ""))
                    if not url.startswith("data:") or ";base64," not in url:
                        raise RequestError("images must be base64 data URLs (data:image/...;base64,...)")
                    try:
                        images.append(base64.b64decode(url.split(";base64,", 1)[1], validate=True))
                    except ValueError as exc:
                        raise RequestError("bad base64 image data") from exc
                    parts.append({"type": "image"})
                else:
                    raise RequestError(f"unsupported content part type {kind!r}")
        else:
            raise RequestError("message content must be a string or a list of parts")
        messages.append({"role": m["role"], "content": parts})
    return messages, images


def parse_settings(body: dict, defaults: DecodingSettings) -> DecodingSettings:
    overrides: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens must be a positive integer")
        overrides["max_tokens"] = max_tokens
    for key in ("temperature", "top_p", "top_k", "seed", "stop", "min_tokens"):
        if body.get(key) is not None:
            overrides[key] = body[key]
    try:
        return defaults.merged(overrides)
    except (TypeError, ValueError) as exc:
        raise RequestError(str(exc)) from exc


def create_app(backends: dict[str, Backend], *, preload: bool = True):
    """A FastAPI app serving `backends` by name (the `model` field picks one)."""
    @asynccontextmanager
    async def lifespan(app):
        if preload:
            for backend in backends.values():
                load = getattr(backend, "load", None)
                if load is not None:
                    await asyncio.to_thread(load)
        yield
        for backend in backends.values():
            await backend.aclose()

    app = FastAPI(title="sftvsrl OpenAI-compatible server", lifespan=lifespan)
    created = int(time.time())
    counts: dict[str, int] = {}
    sessions: OrderedDict[str, int] = OrderedDict()  # X-Session-ID -> requests, most recent last

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(backends)}

    @app.get("/stats")
    async def stats():
        """Per model: requests served, whether a generation is running, tokens of the last one."""
        out = {}
        for n, b in backends.items():
            loaded = getattr(b, "_loaded", None)
            out[n] = {"requests": counts.get(n, 0),
                      "busy": bool(loaded is not None and loaded.lock.locked()),
                      "last_generated_tokens": getattr(b, "last_generated_tokens", None)}
        return out

    @app.get("/stats/sessions")
    async def session_stats():
        """Requests per `X-Session-ID` header (the most recent sessions, oldest first)."""
        return dict(sessions)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "sftvsrl"}
                                            for n in backends]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object")
        name = body.get("model") or next(iter(backends))
        backend = backends.get(name)
        if backend is None:
            return error(404, f"model {name!r} not found; this server has {list(backends)}", "not_found_error")
        try:
            messages, images = parse_messages(body.get("messages"))
            settings = parse_settings(body, backend.settings)
        except RequestError as exc:
            return error(400, str(exc))
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        counts[name] = counts.get(name, 0) + 1
        session = request.headers.get(SESSION_HEADER)
        if session:
            sessions[session[:128]] = sessions.pop(session[:128], 0) + 1
            while len(sessions) > MAX_SESSIONS:
                sessions.popitem(last=False)
        stream = backend.stream(messages, images, settings)
        first = await anext(stream)
        if isinstance(first, Completion) and first.error:
            await stream.aclose()
            status = 400 if first.error.startswith(("ValueError", "RequestError")) else 500
            return error(status, first.error, "invalid_request_error" if status == 400 else "server_error")

        if not body.get("stream"):
            final = first
            async for item in stream:
                final = item
            assert isinstance(final, Completion)
            if final.error:
                return error(500, final.error, "server_error")
            return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": final.text},
                                 "finish_reason": final.finish_reason}],
                    "usage": _usage(final)}

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            data = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                item = first
                while True:
                    if isinstance(item, Completion):
                        if item.error:
                            yield "data: " + json.dumps({"error": {"message": item.error, "type": "server_error"}}) + "\n\n"
                            return
                        yield chunk({}, item.finish_reason)
                        yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "model": name,
                                                     "choices": [], "usage": _usage(item)}) + "\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    yield chunk({"content": item.text})
                    item = await anext(stream)
            finally:
                await stream.aclose()  # client gone or finished: stop generation

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def _usage(c: Completion) -> dict:
    p, n = c.prompt_tokens or 0, c.completion_tokens or 0
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


def serve(path: str, *, host: str = "127.0.0.1", port: int = 8001, name: str | None = None,
          device: str | None = None, max_tokens: int = 256) -> None:
    """Serve one checkpoint directory with the `local` backend (blocks until stopped)."""
    served = name or Path(path).name
    backend = LocalBackend(name=served, path=path, device=device, settings=DecodingSettings(max_tokens=max_tokens))
    uvicorn.run(create_app({served: backend}), host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.serve_openai", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="Hugging Face checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--name", help="served model name (default: the directory name)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    args = parser.parse_args(argv)
    serve(args.path, host=args.host, port=args.port, name=args.name, device=args.device)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
