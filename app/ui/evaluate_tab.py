"""The Evaluate tab: launch a paper-protocol evaluation (task, splits, models, episodes) from the
page, follow its progress, and read the ID/OOD table and bar chart with binomial error bars, with
links into the episodes behind each number (the Inspect tab filtered to that run).

Launching and stopping go through the service layer as the page's visitor (`common.visitor`), so
the API's rules hold here exactly: on a public server both need the operator token, which the tab
then asks for (and without a configured operator token the tab is disabled); the episode count is
bounded (`app.evaluation.MAX_EPISODES_PER_SPLIT`), everywhere."""
from __future__ import annotations

import asyncio

import gradio as gr

from game.tasks import DEFAULT_TASK, TASKS

from .. import services
from ..charts import pair_html
from ..evaluation import MAX_EPISODES_PER_SPLIT, EvalConfig, EvalError, markdown_table, plot, summarize
from .common import error_html, esc, note_html, serving, unserved_text, visitor

POLL_S = 0.5


def _progress_html(run: dict, stopped: bool = False) -> str:
    total, done = run.get("total") or 0, run.get("done") or 0
    pct = 100 * done / total if total else 0
    status = run["status"]
    words = {"interrupted": "stopped", "running": "running"}.get(status, status)
    if stopped and status == "running":  # the job is gone: it cannot go on
        status, words = "interrupted", "stopped"
    resume = (' <span class="sv-dim">Its finished episodes stay stored (the Inspect links below list them).'
              '</span>') if status == "interrupted" else ""
    return (f'<div class="sv-info" data-status="{esc(status)}">Run <code>{esc(run["id"])}</code>: '
            f'{esc(words)} — {done}/{total} episodes ({pct:.0f}%){resume}'
            f'<progress max="{total or 1}" value="{done}" style="width:100%"></progress></div>')


def _links_html(ctx, run_id: str, summary: dict) -> str:
    items = []
    for model in summary.get("models", []):
        for split in summary.get("splits", []):
            items.append(f'<a href="?tab=inspect&run={esc(run_id)}&model={esc(model)}&split={esc(split)}" '
                         f'target="_self">{esc(model)} · {esc(split)}</a>')
    return '<div class="sv-dim">Episodes behind each number: ' + " · ".join(items) + "</div>"


async def launch(ctx, caller, task: str, splits: list[str], models: list[str], episodes) -> tuple[str, asyncio.Task]:
    """Start an evaluation from the tab's inputs through the service layer as `caller` (the API's
    and the CLI's path: who may, the size bound, one run at a time, each model's checkpoint)."""
    try:
        n = int(episodes) if episodes else None
    except (TypeError, ValueError, OverflowError):
        raise EvalError(f"episodes per split must be a whole number, got {str(episodes)[:20]!r}") from None
    config = EvalConfig(task, list(models or []), list(splits or []) or None, n)
    return await services.start_evaluation(ctx, caller, config)


PUBLIC_NOTE = ("On this public server, evaluations are started and stopped by the operator: enter the "
               "operator token to run one. Anyone can read finished runs' tables (and their episodes in Inspect).")
DISABLED_NOTE = ("Evaluations are disabled on this public server: it has no operator token "
                 "(the operator sets SFTVSRL_ADMIN_TOKEN).")


def _split_names(task: str) -> list[str]:
    return list(TASKS[task].split_names)


def _task_choices(ctx) -> list[tuple[str, str]]:
    """Tasks, each labelled with why it cannot run when no configured model serves it."""
    return [(t if serving(ctx.pool, t) else f"{t} — no configured model serves it", t) for t in TASKS]


def build(ctx) -> dict:
    public = ctx.access is not None and ctx.access.public
    disabled = public and not ctx.access.admin_token
    if public:
        gr.HTML(note_html(DISABLED_NOTE if disabled else PUBLIC_NOTE), elem_id="eval-public-note")
    with gr.Row(elem_classes="sv-controls"):
        task = gr.Dropdown(_task_choices(ctx), value=DEFAULT_TASK, label="Task", elem_id="eval-task")
        splits = gr.CheckboxGroup(_split_names(DEFAULT_TASK), value=_split_names(DEFAULT_TASK), label="Splits",
                                  elem_id="eval-splits")
        models = gr.CheckboxGroup(ctx.pool.names, value=[n for n in ("sft", "rl") if n in ctx.pool.names],
                                  label="Models", elem_id="eval-models")
        episodes = gr.Number(value=20, precision=0, minimum=1, maximum=MAX_EPISODES_PER_SPLIT,
                             label="Episodes per split",
                             info=f"the paper: 234 (GP), 48 (V-IRL); at most {MAX_EPISODES_PER_SPLIT:,}",
                             elem_id="eval-episodes")
    with gr.Row(elem_classes="sv-actions"):
        operator = gr.Textbox("", type="password", label="Operator token", visible=public and not disabled,
                              max_length=256, elem_id="eval-operator-token", scale=2)
        start = gr.Button("Run evaluation", variant="primary", elem_id="eval-run", interactive=not disabled)
        stop = gr.Button("Stop", elem_id="eval-stop", interactive=not disabled)
    task_note = gr.HTML("", elem_id="eval-task-note", elem_classes="sv-collapse")
    progress = gr.HTML("", elem_id="eval-progress", elem_classes="sv-collapse")
    table = gr.Markdown("", elem_id="eval-table")
    chart = gr.HTML("", elem_id="eval-plot", elem_classes="sv-collapse")  # both looks (app.charts)
    links = gr.HTML("", elem_id="eval-links", elem_classes="sv-collapse")
    running = gr.State(None)  # the run id this page started, for Stop

    def on_task(t):
        names = _split_names(t)
        return {splits: gr.CheckboxGroup(choices=names, value=names),
                task_note: "" if serving(ctx.pool, t) else note_html(unserved_text(t))}

    task.change(on_task, task, [splits, task_note])

    async def on_run(task_v, splits_v, models_v, n, token_v, request: gr.Request):
        who = visitor(ctx, request, operator_token=token_v if isinstance(token_v, str) else None)
        try:   # who may comes first: a visitor without the operator token learns nothing else
            services.require_operator(ctx, who, "starting an evaluation")
        except services.ServiceError as exc:
            yield {progress: error_html(str(exc))}
            return
        if not serving(ctx.pool, task_v):
            yield {progress: note_html(unserved_text(task_v))}
            return
        try:
            run_id, job = await launch(ctx, who, task_v, splits_v, models_v, n)
        except (EvalError, ValueError, TypeError) as exc:  # ServiceError is a ValueError
            yield {progress: error_html(str(exc))}
            return
        yield {running: run_id, table: "", links: "", chart: ""}
        try:
            while not job.done():
                run = ctx.store.get_run(run_id)
                if run:
                    yield {progress: _progress_html(run)}
                await asyncio.sleep(POLL_S)
            job.result()
        except asyncio.CancelledError:
            await _cancel(ctx, who, run_id)
            raise
        except Exception as exc:  # noqa: BLE001 - shown inline, the run stays resumable
            yield {progress: error_html(f"evaluation failed: {exc}"), running: None}
            return
        progress_now = _progress_html(ctx.store.get_run(run_id))
        try:
            summary = summarize(ctx.store, run_id)
            table_md = markdown_table(summary)
        except Exception as exc:  # noqa: BLE001 - shown inline; the stored episodes stay
            yield {progress: progress_now + error_html(f"could not summarise the run: {exc}"), running: None}
            return
        out = {progress: progress_now, table: table_md, links: _links_html(ctx, run_id, summary), running: None}
        try:
            imgs = pair_html(lambda path, look: plot(summary, path, look),
                             f"{task_v}: ID vs OOD, binomial error bars", "sv-eval-chart")
            out[chart] = f'<figure class="sv-eval-plot">{imgs}</figure>'
        except Exception as exc:  # noqa: BLE001 - the table is still worth showing
            out[progress] = progress_now + error_html(f"could not draw the chart: {exc}")
        yield out

    event = start.click(on_run, [task, splits, models, episodes, operator], [progress, table, chart, links, running],
                        concurrency_limit=None)

    async def on_stop(run_id, token_v, request: gr.Request):
        """Cancel this page's run and show where it stopped (its finished episodes stay stored)."""
        if not run_id or not isinstance(run_id, str):
            return gr.skip()
        who = visitor(ctx, request, operator_token=token_v if isinstance(token_v, str) else None)
        try:
            await _cancel(ctx, who, run_id)
        except services.ServiceError as exc:
            return {progress: error_html(str(exc))}
        run = ctx.store.get_run(run_id)
        return {running: None, progress: _progress_html(run, stopped=True) if run else ""}

    stop.click(on_stop, [running, operator], [running, progress], cancels=[event])
    return {}


async def _cancel(ctx, caller, run_id: str) -> None:
    """Cancel a running evaluation (the service layer's cancel, as `caller`) and wait until it has
    recorded that it was interrupted."""
    job = ctx.evals.get(run_id)
    if job is None or job.done():
        return
    services.cancel_evaluation(ctx, caller, run_id)
    await asyncio.gather(job, return_exceptions=True)
