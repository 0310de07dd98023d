"""The Evaluate tab: launch a paper-protocol evaluation (task, splits, models, episodes) from the
page, follow its progress, and read the ID/OOD table and bar chart with binomial error bars, with
links into the episodes behind each number (the Inspect tab filtered to that run)."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import gradio as gr

from game.tasks import TASKS

from .. import services
from ..evaluation import EvalConfig, EvalError, markdown_table, plot, summarize
from .common import error_html, esc

POLL_S = 0.5


def _progress_html(run: dict) -> str:
    total, done = run.get("total") or 0, run.get("done") or 0
    pct = 100 * done / total if total else 0
    return (f'<div class="sv-info" data-status="{esc(run["status"])}">Run <code>{esc(run["id"])}</code>: '
            f'{esc(run["status"])} — {done}/{total} episodes ({pct:.0f}%)'
            f'<progress max="{total or 1}" value="{done}" style="width:100%"></progress></div>')


def _links_html(ctx, run_id: str, summary: dict) -> str:
    items = []
    for model in summary.get("models", []):
        for split in summary.get("splits", []):
            items.append(f'<a href="?tab=inspect&run={esc(run_id)}&model={esc(model)}&split={esc(split)}" '
                         f'target="_self">{esc(model)} · {esc(split)}</a>')
    return '<div class="sv-dim">Episodes behind each number: ' + " · ".join(items) + "</div>"


def launch(ctx, task: str, splits: list[str], models: list[str], episodes) -> tuple[str, asyncio.Task]:
    """Start an evaluation from the tab's inputs through the service layer (the API's and the
    CLI's path: validation, one run at a time, each model's checkpoint for the task)."""
    n = int(episodes) if episodes else None
    config = EvalConfig(task, list(models or []), list(splits or []) or None, n)
    return services.start_evaluation(ctx, config)


def _split_names(task: str) -> list[str]:
    return list(TASKS[task].split_names)


def build(ctx) -> dict:
    task_names = list(TASKS)
    with gr.Row(elem_classes="sv-controls"):
        task = gr.Dropdown(task_names, value="gp-l", label="Task", elem_id="eval-task")
        splits = gr.CheckboxGroup(_split_names("gp-l"), value=_split_names("gp-l"), label="Splits",
                                  elem_id="eval-splits")
        models = gr.CheckboxGroup(ctx.pool.names, value=[n for n in ("sft", "rl") if n in ctx.pool.names],
                                  label="Models", elem_id="eval-models")
        episodes = gr.Number(value=20, precision=0, minimum=1, label="Episodes per split (paper: 234 GP, 48 V-IRL)",
                             elem_id="eval-episodes")
    with gr.Row(elem_classes="sv-actions"):
        start = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
        stop = gr.Button("Stop", elem_id="eval-stop")
    progress = gr.HTML("", elem_id="eval-progress")
    table = gr.Markdown("", elem_id="eval-table")
    chart = gr.Image(label="ID vs OOD (binomial error bars)", type="filepath", interactive=False,
                     visible=False, elem_id="eval-plot")
    links = gr.HTML("", elem_id="eval-links")

    task.change(lambda t: gr.CheckboxGroup(choices=_split_names(t), value=_split_names(t)), task, splits)

    async def on_run(task_v, splits_v, models_v, n):
        try:
            run_id, job = launch(ctx, task_v, splits_v, models_v, n)
        except (EvalError, ValueError, TypeError) as exc:  # ServiceError is a ValueError
            yield error_html(str(exc)), gr.skip(), gr.skip(), gr.skip()
            return
        try:
            while not job.done():
                run = ctx.store.get_run(run_id)
                if run:
                    yield _progress_html(run), gr.skip(), gr.skip(), gr.skip()
                await asyncio.sleep(POLL_S)
            job.result()
        except asyncio.CancelledError:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            raise
        except Exception as exc:  # noqa: BLE001 - shown inline, the run stays resumable
            yield error_html(f"evaluation failed: {exc}"), gr.skip(), gr.skip(), gr.skip()
            return
        progress_now = _progress_html(ctx.store.get_run(run_id))
        try:
            summary = summarize(ctx.store, run_id)
            table_md = markdown_table(summary)
        except Exception as exc:  # noqa: BLE001 - shown inline; the stored episodes stay
            yield progress_now + error_html(f"could not summarise the run: {exc}"), gr.skip(), gr.skip(), gr.skip()
            return
        try:
            png = plot(summary, Path(tempfile.mkdtemp(prefix="sftvsrl-eval-")) / "plot.png")
            chart_update = gr.Image(value=str(png), visible=True)
        except Exception as exc:  # noqa: BLE001 - the table is still worth showing
            progress_now += error_html(f"could not draw the chart: {exc}")
            chart_update = gr.skip()
        yield progress_now, table_md, chart_update, _links_html(ctx, run_id, summary)

    event = start.click(on_run, [task, splits, models, episodes], [progress, table, chart, links],
                        concurrency_limit=None)
    stop.click(None, None, None, cancels=[event])
    return {}
