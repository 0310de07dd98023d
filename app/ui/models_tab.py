"""The Models tab: which models are configured, where they run (backend, path or URL), which
tasks each serves, whether each is loaded ("loading…" while the server's warm start loads it,
`ModelPool.state`), and a live health check with its latency. Paths are shown as the page's visitor
may see them (`services.model_where`: no absolute server paths on a public server)."""
from __future__ import annotations

import asyncio
import time

import gradio as gr

from .. import services
from ..access import Caller
from .common import badge, error_html, esc, visitor


def _table(ctx, who, rows: list[str]) -> str:
    source = esc(services.models_source(ctx, who))
    return (f'<div class="sv-dim">Configuration: <code>{source}</code></div><table class="sv-models">'
            '<tr><th>model</th><th>backend</th><th>where</th><th>tasks</th><th>loaded</th><th>health</th></tr>'
            + "".join(rows) + "</table>")


def _row(ctx, who, name: str, health_html: str) -> str:
    spec = ctx.pool.spec(name)
    return (f'<tr data-model="{esc(name)}"><td><b>{esc(spec.label or name)}</b> <code>{esc(name)}</code></td>'
            f'<td>{esc(spec.backend)}</td><td><code>{esc(services.model_where(ctx, who, name))}</code></td>'
            f'<td>{esc(", ".join(spec.tasks))}</td><td>{state_html(ctx, who, name)}</td><td>{health_html}</td></tr>')


def state_html(ctx, who, name: str) -> str:
    """Whether the model's checkpoints are loaded: "loading…" while the warm start loads them (a
    failure's reason as `who` may see it: no absolute server paths on a public server)."""
    states = [ctx.pool.state(name, task) for task in ctx.pool.spec(name).tasks]
    if any(s == "loading" for s in states):
        return f'<span data-state="loading">{badge("info", "loading…")}</span>'
    failed = next((s for s in states if s.startswith("failed")), None)
    if failed:
        return f'<span data-state="failed">{badge("bad", "failed")} <span class="sv-dim">{esc(services.public_text(ctx, who, failed[8:]))}</span></span>'
    if all(s == "ready" for s in states):
        return f'<span data-state="ready">{badge("ok", "ready")}</span>'
    return '<span data-state="cold" class="sv-dim">loads on first use</span>'


def listing(ctx, who=Caller()) -> str:
    """The configured models without contacting them (shown before the first check), as `who`
    (default: an anonymous visitor) may see them."""
    if ctx.pool.error:
        return error_html(f"Model configuration problem: {services.public_text(ctx, who, ctx.pool.error)}")
    return _table(ctx, who, [_row(ctx, who, n, '<span class="sv-dim">not checked yet</span>') for n in ctx.pool.names])


async def health_rows(ctx, who=Caller()) -> str:
    """The configured models, each with a live health check (every checkpoint it serves) and its latency."""
    if ctx.pool.error:
        return error_html(f"Model configuration problem: {services.public_text(ctx, who, ctx.pool.error)}")

    async def check(name):
        start = time.perf_counter()
        health = await ctx.pool.spec(name).health(lambda task: ctx.pool.backend(name, task), timeout=10)
        ms = (time.perf_counter() - start) * 1000
        detail = services.public_text(ctx, who, health.detail)
        return _row(ctx, who, name, f'{badge("ok" if health.ok else "bad", "healthy" if health.ok else "unavailable")} '
                                    f'<span class="sv-dim">{esc(detail)} · {ms:.0f} ms</span>')

    return _table(ctx, who, list(await asyncio.gather(*(check(n) for n in ctx.pool.names))))


def build(ctx, tab=None) -> dict:
    """The tab's content; `tab` (its gr.Tab) re-checks health whenever the tab is opened."""
    refresh = gr.Button("Check health", variant="primary", elem_id="models-refresh")
    out = gr.HTML(lambda: listing(ctx), elem_id="models-health")  # drawn per page load: "loading…" is current

    async def on_refresh(request: gr.Request):
        return await health_rows(ctx, visitor(ctx, request))

    refresh.click(on_refresh, None, out)
    if tab is not None:
        tab.select(on_refresh, None, out)
    return {}
