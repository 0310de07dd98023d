"""The Models tab: which models are configured, where they run (backend, path or URL), which
tasks each serves, and a live health check with its latency."""
from __future__ import annotations

import asyncio
import time

import gradio as gr

from .common import badge, error_html, esc


async def health_rows(ctx) -> str:
    if ctx.pool.error:
        return error_html(f"Model configuration problem: {ctx.pool.error}")
    names = ctx.pool.names

    async def check(name):
        spec = ctx.pool.spec(name)
        start = time.perf_counter()
        health = await spec.health(lambda task: ctx.pool.backend(name, task), timeout=10)
        ok, detail = health.ok, health.detail
        ms = (time.perf_counter() - start) * 1000
        return (f'<tr data-model="{esc(name)}"><td><b>{esc(spec.label or name)}</b> <code>{esc(name)}</code></td>'
                f'<td>{esc(spec.backend)}</td><td><code>{esc(spec.where)}</code></td>'
                f'<td>{esc(", ".join(spec.tasks))}</td>'
                f'<td>{badge("ok" if ok else "bad", "healthy" if ok else "unavailable")} '
                f'<span class="sv-dim">{esc(detail)} · {ms:.0f} ms</span></td></tr>')

    rows = await asyncio.gather(*(check(n) for n in names))
    source = esc(ctx.pool.config.source) if ctx.pool.config else ""
    return (f'<div class="sv-dim">Configuration: <code>{source}</code></div><table class="sv-models">'
            '<tr><th>model</th><th>backend</th><th>where</th><th>tasks</th><th>health</th></tr>'
            + "".join(rows) + "</table>")


def build(ctx) -> dict:
    refresh = gr.Button("Check health", variant="primary", elem_id="models-refresh")
    out = gr.HTML("", elem_id="models-health")
    async def on_refresh():
        return await health_rows(ctx)

    refresh.click(on_refresh, None, out)
    return {}
