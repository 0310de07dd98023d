"""Episodes: start (paired, same instance), stream (SSE), submit a human move, cancel; list,
filter, get, export (JSONL, Markdown, bundle) and replay stored episodes."""
from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from ..export import bundle, episode_jsonl, episode_markdown, replay_group_events
from ..runner import HumanPlayer
from ..schemas import Episode, EpisodeList, EpisodeRef, EpisodeRequest, GroupStarted, Message, SubmitRequest
from game.tasks import OUTCOMES

from .. import services
from .deps import bad_request, ctx, not_found

router = APIRouter(tags=["episodes"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(index: int, event: dict) -> str:
    return f"id: {index}\nevent: {event.get('type', 'message')}\ndata: {json.dumps(event, default=str)}\n\n"


@router.post("/episodes", response_model=GroupStarted, status_code=201,
             summary="Start one episode per participant on the same instance (paired)")
async def start_episodes(body: EpisodeRequest, c=Depends(ctx)) -> GroupStarted:
    decoding = body.decoding.model_dump(exclude_none=True) if body.decoding else {}
    try:
        instance = services.live_instance(c, body.task, body.instance)
        participants = []
        for p in body.participants:
            if p.human == (p.model is not None):
                raise services.ServiceError("each participant is either {\"model\": NAME} or {\"human\": true}")
            participants.append(HumanPlayer(name=p.name or "human") if p.human
                                else services.model_player(c, p.model, body.task, decoding))
        group = await services.start_group(c, instance, participants, {"decoding": decoding})
    except services.ServiceError as exc:
        raise HTTPException(status_code=exc.status, detail=str(exc)) from None
    refs = []
    for eid in group.episode_ids:
        ep = c.store.get_episode(eid, steps=False)
        refs.append(EpisodeRef(episode_id=eid, participant=ep["participant"], kind=ep["participant_kind"]))
    return GroupStarted(group_id=group.group_id, task=instance.task, instance_key=instance.key, episodes=refs,
                        events_url=f"/api/groups/{group.group_id}/events")


async def _stream_live(group, after: int, episode_id: str | None, request: Request):
    async for index, event in group.subscribe(after, episode_id):
        if await request.is_disconnected():
            return
        if event is None:
            yield ": ping\n\n"
            continue
        yield sse(index, event)
        if episode_id is not None and event.get("type") == "finished":
            return  # this episode is over (its partners may still be playing)


async def _stream_stored(c, episode_ids: list[str], delay: float = 0.0):
    i = 0
    async for event in replay_group_events(c.store, episode_ids, delay_s=delay):
        i += 1
        yield sse(i, event)


@router.get("/groups/{group_id}/events", summary="Server-Sent Events of every episode in a group",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def group_events(group_id: str, request: Request, last_event_id: int = Header(0, alias="Last-Event-ID"),
                       delay: float = Query(0, ge=0, le=10, description="seconds between replayed steps"),
                       c=Depends(ctx)):
    group = c.live.group(group_id)
    if group is not None:
        return StreamingResponse(_stream_live(group, last_event_id, None, request), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    eps = c.store.list_episodes(group_id=group_id, limit=64)
    if not eps:
        raise not_found("group")
    return StreamingResponse(_stream_stored(c, [e["id"] for e in eps], delay), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.get("/episodes/{episode_id}/events", summary="Server-Sent Events of one episode (live, else replayed)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def episode_events(episode_id: str, request: Request, last_event_id: int = Header(0, alias="Last-Event-ID"),
                         delay: float = Query(0, ge=0, le=10, description="seconds between replayed steps"),
                         c=Depends(ctx)):
    group = c.live.group_of(episode_id)
    if group is not None:
        return StreamingResponse(_stream_live(group, last_event_id, episode_id, request),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    if c.store.get_episode(episode_id, steps=False) is None:
        raise not_found("episode")
    return StreamingResponse(_stream_stored(c, [episode_id], delay), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.post("/episodes/{episode_id}/submit", response_model=Message, summary="A human player's move")
async def submit(episode_id: str, body: SubmitRequest, c=Depends(ctx)) -> Message:
    ep = c.store.get_episode(episode_id, steps=False)
    if ep is None:
        raise not_found("episode")
    human = c.live.human(episode_id)
    if human is None or ep["status"] != "running":
        raise bad_request(f"this episode has no live human player (status {ep['status']}, "
                          f"played by {ep['participant_kind']})")
    if not human.queue.empty():
        raise bad_request("a move is already pending: wait for its 'step' event")
    human.submit(body.text)
    return Message(detail="submitted")


@router.post("/episodes/{episode_id}/cancel", response_model=Message, summary="Stop a running group")
async def cancel(episode_id: str, c=Depends(ctx)) -> Message:
    group = c.live.group_of(episode_id)
    if group is None or group.done:
        raise bad_request("no running episode with this id")
    group.task.cancel()
    return Message(detail="cancelled")


def _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key) -> dict:
    if outcome is not None and outcome not in OUTCOMES:
        raise bad_request(f"unknown outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
    return dict(task=task, participant=participant, status=status, success=success, outcome=outcome,
                group_id=group_id, eval_run_id=run_id, eval_split=split, instance_key=instance_key)


FILTER_DOC = "filters: task, participant, status, success, outcome (last step's), group_id, run_id, split, instance_key"


@router.get("/episodes", response_model=EpisodeList, summary="List and filter episodes", description=FILTER_DOC)
def list_episodes(task: str | None = None, participant: str | None = None,
                  status: Literal["running", "finished", "error", "interrupted"] | None = None,
                  success: bool | None = None, outcome: str | None = None, group_id: str | None = None,
                  run_id: str | None = None, split: str | None = None, instance_key: str | None = None,
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0), c=Depends(ctx)) -> EpisodeList:
    f = _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key)
    return EpisodeList(episodes=c.store.list_episodes(limit=limit, offset=offset, **f), limit=limit, offset=offset)


@router.get("/export/episodes", summary="Export filtered episodes: JSONL (one line per step) or a bundle",
            description=FILTER_DOC)
def export_many(format: Literal["jsonl", "bundle"] = "jsonl", task: str | None = None,
                participant: str | None = None, status: str | None = None, success: bool | None = None,
                outcome: str | None = None, group_id: str | None = None, run_id: str | None = None,
                split: str | None = None, instance_key: str | None = None,
                limit: int = Query(1000, ge=1, le=20000), c=Depends(ctx)):
    f = _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key)
    eps = [c.store.get_episode(e["id"]) for e in c.store.list_episodes(limit=limit, **f)]
    if format == "bundle":
        extra = {}
        if run_id and c.store.get_run(run_id):
            from ..evaluation import run_artifacts

            extra = run_artifacts(c.store, run_id)  # an evaluation's bundle carries its table and plot
        return Response(bundle(eps, extra=extra), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="episodes.zip"'})
    return PlainTextResponse("".join(episode_jsonl(eps)), media_type="application/x-ndjson")


@router.get("/episodes/{episode_id}", response_model=Episode, summary="One episode with its steps")
def get_episode(episode_id: str, prompts: bool = False, c=Depends(ctx)) -> Episode:
    ep = c.store.get_episode(episode_id, prompts=prompts)
    if ep is None:
        raise not_found("episode")
    return ep


@router.get("/episodes/{episode_id}/export", summary="Export one episode (jsonl, markdown or bundle)")
def export_one(episode_id: str, format: Literal["jsonl", "markdown", "bundle"] = "markdown", c=Depends(ctx)):
    ep = c.store.get_episode(episode_id)
    if ep is None:
        raise not_found("episode")
    if format == "markdown":
        return PlainTextResponse(episode_markdown(ep), media_type="text/markdown")
    if format == "bundle":
        return Response(bundle([ep]), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="episode-{episode_id[:8]}.zip"'})
    return PlainTextResponse("".join(episode_jsonl([ep])), media_type="application/x-ndjson")
