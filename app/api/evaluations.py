"""Evaluation runs over the API: start (or resume) one in the background, list them, follow progress.
Starting and cancelling are the service layer's (operator-only on a public server)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from .. import services
from ..evaluation import EvalConfig, EvalError, markdown_table, summarize
from ..schemas import EvalRequest, EvalRun, Message
from .deps import caller, ctx, http_error, not_found

router = APIRouter(tags=["evaluations"])


@router.post("/evaluations", response_model=EvalRun, status_code=202,
             summary="Start (or resume) a batch evaluation; poll GET /api/evaluations/{id} for progress")
async def start(body: EvalRequest, c=Depends(ctx), who=Depends(caller)) -> EvalRun:
    try:
        config = EvalConfig(task=body.task, models=body.models, splits=body.splits, episodes=body.episodes,
                            max_tokens=body.max_tokens, concurrency=body.concurrency,
                            sources={"id": c.settings.virl_source})
        run_id, _job = await services.start_evaluation(c, who, config, resume=body.resume)
    except (EvalError, services.ServiceError) as exc:
        raise http_error(exc) from None
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
    if c.store.get_run(run_id) is None:
        raise not_found("evaluation run")
    return PlainTextResponse(markdown_table(summarize(c.store, run_id)), media_type="text/markdown")


@router.post("/evaluations/{run_id}/cancel", response_model=Message,
             summary="Stop a running evaluation (resume later)")
async def cancel(run_id: str, c=Depends(ctx), who=Depends(caller)) -> Message:
    try:
        services.cancel_evaluation(c, who, run_id)
    except services.ServiceError as exc:
        raise http_error(exc) from None
    return Message(detail="cancelled")
