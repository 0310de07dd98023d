"""The one route-source policy: which V-IRL route sources a caller may open.

Allowed for everyone (API clients, UI visitors and deep links): the bundled sets (`bundled:NAME`,
see `game.virl.datasets.BUNDLED`), the server's configured default source, and directories under
the operator-configured roots (`SFTVSRL_VIRL_DIRS`, resolved with symlinks, so nothing outside a
root can be named). The CLI runs as the operator on their own machine and may open any path
(`operator=True`). Every entry calls `check_source` before anything is opened.
"""
from __future__ import annotations

import os
from typing import Any
from pathlib import Path

from game.virl.datasets import BUNDLED

DEFAULT_SOURCE = "bundled:helsinki"
_server: dict[str, Any] = {"default": DEFAULT_SOURCE, "dirs": ()}


class SourceRefused(ValueError):
    """A route source this caller may not open (message shown as is)."""


def configure(settings) -> None:
    """Record the server's default source and operator roots (`create_app` calls this)."""
    _server["default"] = settings.virl_source
    _server["dirs"] = tuple(settings.virl_dirs)


def allowed_roots(settings=None) -> tuple[Path, ...]:
    dirs = settings.virl_dirs if settings is not None else _server["dirs"]
    return tuple(Path(os.path.realpath(d)) for d in dirs if d)


def check_source(source, settings=None, *, operator: bool = False) -> str:
    """`source` when this caller may open it, else `SourceRefused` naming what is allowed."""
    text = str(source or "").strip()
    if not text:
        return settings.virl_source if settings is not None else _server["default"]
    default = settings.virl_source if settings is not None else _server["default"]
    if text.startswith("bundled:"):
        if text.split(":", 1)[1] in BUNDLED:
            return text
        raise SourceRefused(f"unknown bundled route set {text!r}; use "
                            + ", ".join(f"bundled:{n}" for n in BUNDLED))
    if text == default or operator:
        return text
    if len(text) <= 1024 and "\x00" not in text:
        real = Path(os.path.realpath(text))
        for root in allowed_roots(settings):
            if real == root or root in real.parents:
                return text
    allowed = ", ".join(f"bundled:{n}" for n in BUNDLED)
    roots = allowed_roots(settings)
    extra = f", or a directory under {', '.join(str(r) for r in roots)}" if roots else ""
    raise SourceRefused(f"route source {text[:80]!r} is not allowed here; use {allowed}{extra}")
