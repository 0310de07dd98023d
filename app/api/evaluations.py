"""Evaluation runs over the API: start (or resume) one in the background, list them, follow progress."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from ..evaluation import EvalConfig, EvalError, find_resumable, run_evaluation
from ..schemas import EvalRequest, EvalRun, Message
from .deps import bad_request, ctx, not_found

router = APIRouter(tags=["evaluations"])


@router.post("/evaluations", response_model=EvalRun, status_code=202,
             summary="Start (or resume) a batch evaluation; poll GET /api/evaluations/{id} for progress")
async def start(body: EvalRequest, c=Depends(ctx)) -> EvalRun:
    try:
        config = EvalConfig(task=body.task, models=body.models, splits=body.splits, episodes=body.episodes,
                            max_tokens=body.max_tokens, concurrency=body.concurrency,
                            sources={"id": c.settings.virl_source})
    except EvalError as exc:
        raise bad_request(str(exc)) from None
    for m in body.models:
        if m not in c.pool.names:
            raise bad_request(f"unknown model {m!r}; configured: {', '.join(c.pool.names) or 'none'}")
        if not c.pool.spec(m).supports(body.task):
            raise bad_request(f"model {m!r} is not configured for {body.task}")
    if any(not t.done() for t in c.evals.values()):
        raise bad_request("an evaluation is already running on this server; wait for it or cancel it")
    prior = find_resumable(c.store, config) if body.resume else None
    run_id = prior["id"] if prior else c.store.create_run(task=config.task, config=config.to_dict(),
                                                          config_key=config.key, total=0)

    def player(name):
        spec = c.pool.spec(name)
        decoding = spec.decoding.merged({"max_tokens": body.max_tokens}) if body.max_tokens else None
        return c.pool.player(name, decoding, task=config.task)

    task = asyncio.create_task(run_evaluation(c.store, player, config, run_id=run_id))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    c.evals[run_id] = task
    await asyncio.sleep(0)
    return c.store.get_run(run_id)


@router.get("/evaluations", response_model=list[EvalRun], summary="Evaluation runs, newest first")
def runs(limit: int = Query(50, ge=1, le=500), c=Depends(ctx)) -> list[EvalRun]:
    return c.store.list_runs(limit=limit)


@router.get("/evaluations/{run_id}", response_model=EvalRun, summary="One run: progress and (when done) metrics")
def run(run_id: str, c=Depends(ctx)) -> EvalRun:
    r = c.store.get_run(run_id)
    if r is None:
        raise not_found("evaluation run")
    return r


@router.get("/evaluations/{run_id}/table", summary="The run's Markdown table")
def table(run_id: str, c=Depends(ctx)):
    from fastapi.responses import PlainTextResponse

    from ..evaluation import markdown_table, summarize

    if c.store.get_run(run_id) is None:
        raise not_found("evaluation run")
    return PlainTextResponse(markdown_table(summarize(c.store, run_id)), media_type="text/markdown")


@router.post("/evaluations/{run_id}/cancel", response_model=Message,
             summary="Stop a running evaluation (resume later)")
async def cancel(run_id: str, c=Depends(ctx)) -> Message:
    task = c.evals.get(run_id)
    if task is None or task.done():
        raise bad_request("this evaluation is not running on this server")
    task.cancel()
    return Message(detail="cancelled")
