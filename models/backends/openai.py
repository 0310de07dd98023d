"""The `openai` backend: any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, SGLang,
llama.cpp's server, our `models.serve_openai`, an API provider), streamed over SSE with httpx.

Images are sent as base64 data URLs (`image_url` parts, PNG by default to keep pixels exact; JPEG as
the reference's API evaluator did with `image_format="jpeg"`). Text-only messages are sent with
plain-string content, which every server accepts. Connection failures before the first byte are
retried a bounded number of times; a stream cut mid-way ends with an error record. Cancelling the
consumer closes the HTTP stream, which cancels the request on the server. Every request of an
episode carries `X-Session-ID: <episode id>` (`session_headers`) for session-sticky routers.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import httpx

from ..decoding import DecodingSettings
from .base import SESSION_HEADER, Backend, Completion, Health, TextDelta, current_session, describe_error
from .local import to_pil


class BackendError(RuntimeError):
    """A failure reported by the server (HTTP error or an error event in the stream)."""


def encode_image(image: Any, fmt: str = "png") -> str:
    """A `data:image/...;base64,...` URL for a PIL image, an array, encoded bytes or a path."""
    if isinstance(image, str) and image.startswith("data:"):
        return image
    pil = to_pil(image)
    buf = io.BytesIO()
    fmt = fmt.lower()
    pil.save(buf, format="JPEG" if fmt in ("jpg", "jpeg") else "PNG")
    mime = "jpeg" if fmt in ("jpg", "jpeg") else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(messages: Sequence[dict], images: Sequence[Any] = (), image_format: str = "png") -> list[dict]:
    """Our content-list messages → OpenAI chat messages; image placeholders take `images` in order."""
    out, it = [], iter(images)
    for m in messages:
        content = m.get("content")
        if isinstance(content, str) or all(p.get("type") == "text" for p in content or []):
            text = content if isinstance(content, str) else "".join(p["text"] for p in content or [])
            out.append({"role": m["role"], "content": text})
            continue
        parts = []
        for p in content or []:
            if p.get("type") == "image":
                try:
                    image = next(it)
                except StopIteration:
                    raise ValueError("more image placeholders than images") from None
                parts.append({"type": "image_url", "image_url": {"url": encode_image(image, image_format)}})
            elif p.get("type") == "text":
                parts.append({"type": "text", "text": p["text"]})
            else:
                parts.append(p)
        out.append({"role": m["role"], "content": parts})
    if next(it, None) is not None:
        raise ValueError("more images than image placeholders in the chat")
    return out


def session_headers() -> dict[str, str]:
    """`X-Session-ID: <episode id>` while an episode's request is made (see `base.in_session`):
    routers that stick sessions to replicas keep an episode's turns on one prefix cache."""
    session = current_session.get()
    return {SESSION_HEADER: session} if session else {}


def request_body(model: str, messages: list[dict], settings: DecodingSettings, stream: bool = True) -> dict:
    """The JSON body of a chat-completions request; unset settings are left to the server."""
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": int(settings.max_tokens),
                            "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    elif settings.do_sample is False:
        body["temperature"] = 0.0
    for key in ("top_p", "top_k", "seed", "min_tokens"):
        value = getattr(settings, key)
        if value is not None:
            body[key] = value
    if settings.stop:
        body["stop"] = list(settings.stop)
    return body


@dataclass(eq=False)  # identity semantics: backends are hashable, compared by object
class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible server. `base_url` is the server root (with or without `/v1`)."""

    base_url: str = "http://127.0.0.1:8000"
    served_name: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    retries: int = 2
    retry_backoff_s: float = 0.25
    image_format: str = "png"
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _client_loop: Any = field(default=None, init=False, repr=False)

    @property
    def api_root(self) -> str:
        root = self.base_url.rstrip("/")
        return root if root.endswith("/v1") else root + "/v1"

    @property
    def model_id(self) -> str:
        return self.served_name or self.name

    def _headers(self) -> dict[str, str]:
        key = self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                headers=self._headers(), trust_env=False)
            self._client_loop = loop
        return self._client

    async def _stream(self, messages, images, settings, timer) -> AsyncIterator[TextDelta | Completion]:
        body = request_body(self.model_id, openai_messages(messages, images, self.image_format), settings)
        url = self.api_root + "/chat/completions"
        client = self.client()
        attempt = 0
        while True:
            try:
                async with client.stream("POST", url, json=body, headers=session_headers()) as response:
                    if response.status_code >= 400:
                        raw = (await response.aread()).decode("utf-8", "replace")
                        raise BackendError(f"HTTP {response.status_code} from {url}: {_error_text(raw)}")
                    async for item in self._parse(response, timer):
                        yield item
                    return
            except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
                raise BackendError(f"no response from {self.base_url} within {self.read_timeout_s:g} s "
                                   f"({type(exc).__name__})") from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retries:
                    raise BackendError(f"cannot connect to {self.base_url} after {attempt + 1} attempt(s): "
                                       f"{describe_error(exc)}") from exc
                attempt += 1
                await asyncio.sleep(self.retry_backoff_s * attempt)

    async def _parse(self, response: httpx.Response, timer) -> AsyncIterator[TextDelta | Completion]:
        text, finish, usage, chunks, done = "", None, None, 0, False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    raise BackendError(f"server error mid-stream: {_error_text(json.dumps(event))}")
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        chunks += 1
                        timer.mark_token()
                        text += piece
                        yield TextDelta(piece)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
            raise BackendError(f"connection to {self.base_url} lost mid-stream after {len(text)} characters: "
                               f"{describe_error(exc)}") from exc
        if not done and finish is None:
            raise BackendError(f"stream from {self.base_url} ended before the reply was complete")
        yield Completion(model=self.name, text=text, finish_reason=finish or "stop",
                         prompt_tokens=(usage or {}).get("prompt_tokens"),
                         completion_tokens=(usage or {}).get("completion_tokens", chunks),
                         time_to_first_token_s=timer.first, elapsed_s=timer.elapsed())

    async def list_models(self) -> list[str]:
        response = await self.client().get(self.api_root + "/models", timeout=self.connect_timeout_s + 5)
        response.raise_for_status()
        return [m.get("id", "") for m in response.json().get("data", [])]

    async def health(self) -> Health:
        try:
            names = await self.list_models()
        except Exception as exc:  # noqa: BLE001 - health never raises
            return Health(False, f"{self.base_url} unreachable: {describe_error(exc)}")
        if self.model_id not in names:
            return Health(False, f"{self.base_url} serves {names or 'no models'}, not {self.model_id!r}", tuple(names))
        return Health(True, f"{self.base_url} serves {self.model_id!r}", tuple(names))

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            try:
                await self._client.aclose()
            except RuntimeError:  # loop already closed
                pass
        self._client = None


def _error_text(raw: str) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.strip()[:300] or "(empty body)"
    err = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
    if isinstance(err, dict):
        err = err.get("message", err)
    return str(err)[:300]
