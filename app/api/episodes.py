"""Episodes: start (paired, same instance), stream (SSE), submit a human move, cancel; list,
filter, get, export (JSONL, Markdown, bundle) and replay stored episodes.

Who may do what is `app.access`: starting a game returns its token, which playing, cancelling
and (without the public gallery) reading it require; listings are scoped to the caller's games.
SSE streams number their events; `Last-Event-ID` resumes after that event (live or replayed), and
every stream ends with `group_finished`."""
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
from .deps import bad_request, ctx, http_error, not_found

router = APIRouter(tags=["episodes"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(index: int, event: dict) -> str:
    return f"id: {index}\nevent: {event.get('type', 'message')}\ndata: {json.dumps(event, default=str)}\n\n"


@router.post("/episodes", response_model=GroupStarted, status_code=201,
             summary="Start one episode per participant on the same instance (paired)",
             description="Returns the game's `token`: send it as `X-Game-Token` (or `?token=` for SSE) "
                         "to play, cancel or read the game.")
async def start_episodes(body: EpisodeRequest, request: Request, c=Depends(ctx)) -> GroupStarted:
    decoding = body.decoding.model_dump(exclude_none=True) if body.decoding else {}
    try:
        instance = services.live_instance(c, body.task, body.instance)
        participants = []
        for p in body.participants:
            if p.human == (p.model is not None):
                raise services.ServiceError("each participant is either {\"model\": NAME} or {\"human\": true}")
            participants.append(HumanPlayer(name=p.name or "human", idle_timeout_s=c.settings.human_idle_s)
                                if p.human else services.model_player(c, p.model, body.task, decoding))
        group = await services.start_group(c, instance, participants, {"decoding": decoding},
                                           client=c.access.client_key(request))
    except services.ServiceError as exc:
        raise http_error(exc) from None
    refs = []
    for eid in group.episode_ids:
        ep = c.store.get_episode(eid, steps=False)
        refs.append(EpisodeRef(episode_id=eid, participant=ep["participant"], kind=ep["participant_kind"]))
    return GroupStarted(group_id=group.group_id, task=instance.task, instance_key=instance.key, episodes=refs,
                        events_url=f"/api/groups/{group.group_id}/events", token=c.access.game_token(group.group_id))


MAX_EVENT_ID = 10**9


def last_event_id(value: str | None) -> int:
    """A validated SSE `Last-Event-ID` (absent: 0). Ids are the 1-based numbers of our events."""
    if value is None or value.strip() == "":
        return 0
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > MAX_EVENT_ID:
        raise HTTPException(status_code=400, detail=f"Last-Event-ID must be an event number (0..{MAX_EVENT_ID}), "
                                                    f"got {value[:40]!r}")
    return int(text)


def _check_resume(after: int, available: int) -> None:
    if after > available:
        raise HTTPException(status_code=400, detail=f"Last-Event-ID {after} is beyond this stream "
                                                    f"({available} events so far)")


async def _stream_live(group, after: int, episode_id: str | None, request: Request):
    async for index, event in group.subscribe(after, episode_id):
        if await request.is_disconnected():
            return
        if event is None:
            yield ": ping\n\n"
            continue
        yield sse(index, event)


async def _stream_stored(c, group_id: str, episode_ids: list[str], after: int, delay: float = 0.0):
    """A stored group replayed with the same numbering on every request (so `Last-Event-ID`
    resumes it), always ending with `group_finished`."""
    i = 0
    async for event in replay_group_events(c.store, episode_ids, delay_s=delay):
        i += 1
        if i > after:
            yield sse(i, event)
    yield sse(max(i + 1, after + 1), {"type": "group_finished", "group_id": group_id, "replay": True})


def _readable(c, request: Request, episodes: list[dict]) -> None:
    if not all(c.access.may_read(request, e) for e in episodes):
        raise HTTPException(status_code=403, detail="this game needs its token (X-Game-Token header or "
                                                    "?token=, as returned when the game was started)")


@router.get("/groups/{group_id}/events", summary="Server-Sent Events of every episode in a group",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def group_events(group_id: str, request: Request,
                       last_event: str | None = Header(None, alias="Last-Event-ID", max_length=64),
                       delay: float = Query(0, ge=0, le=10, description="seconds between replayed steps"),
                       token: str | None = Query(None, max_length=200, description="the game's token"),
                       c=Depends(ctx)):
    after = last_event_id(last_event)
    group = c.live.group(group_id)
    if group is not None:
        _readable(c, request, [{"group_id": group_id, "eval_run_id": None}])
        _check_resume(after, len(group.events))
        return StreamingResponse(_stream_live(group, after, None, request), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    eps = c.store.list_episodes(group_id=group_id, limit=64)
    if not eps:
        raise not_found("group")
    _readable(c, request, eps)
    return StreamingResponse(_stream_stored(c, group_id, [e["id"] for e in eps], after, delay),
                             media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/episodes/{episode_id}/events", summary="Server-Sent Events of one episode (live, else replayed)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def episode_events(episode_id: str, request: Request,
                         last_event: str | None = Header(None, alias="Last-Event-ID", max_length=64),
                         delay: float = Query(0, ge=0, le=10, description="seconds between replayed steps"),
                         token: str | None = Query(None, max_length=200, description="the game's token"),
                         c=Depends(ctx)):
    after = last_event_id(last_event)
    ep = c.store.get_episode(episode_id, steps=False)
    if ep is None:
        raise not_found("episode")
    _readable(c, request, [ep])
    group = c.live.group_of(episode_id)
    if group is not None:
        _check_resume(after, len(group.events))
        return StreamingResponse(_stream_live(group, after, episode_id, request),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    return StreamingResponse(_stream_stored(c, ep["group_id"], [episode_id], after, delay),
                             media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/episodes/{episode_id}/submit", response_model=Message, summary="A human player's move")
async def submit(episode_id: str, body: SubmitRequest, request: Request, c=Depends(ctx)) -> Message:
    ep = c.store.get_episode(episode_id, steps=False)
    if ep is None:
        raise not_found("episode")
    c.access.require_play(request, ep["group_id"])
    human = c.live.human(episode_id)
    if human is None or ep["status"] != "running":
        raise bad_request(f"this episode has no live human player (status {ep['status']}, "
                          f"played by {ep['participant_kind']})")
    if not human.queue.empty():
        raise bad_request("a move is already pending: wait for its 'step' event")
    human.submit(body.text)
    return Message(detail="submitted")


@router.post("/episodes/{episode_id}/cancel", response_model=Message, summary="Stop a running group")
async def cancel(episode_id: str, request: Request, c=Depends(ctx)) -> Message:
    group = c.live.group_of(episode_id)
    if group is None or group.done:
        raise bad_request("no running episode with this id")
    c.access.require_play(request, group.group_id)
    group.task.cancel()
    return Message(detail="cancelled")


def _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key) -> dict:
    if outcome is not None and outcome not in OUTCOMES:
        raise bad_request(f"unknown outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
    return dict(task=task, participant=participant, status=status, success=success, outcome=outcome,
                group_id=group_id, eval_run_id=run_id, eval_split=split, instance_key=instance_key)


MAX_OFFSET = 2**62
FILTER_DOC = "filters: task, participant, status, success, outcome (last step's), group_id, run_id, split, instance_key"


@router.get("/episodes", response_model=EpisodeList, summary="List and filter episodes", description=FILTER_DOC)
def list_episodes(request: Request, task: str | None = None, participant: str | None = None,
                  status: Literal["running", "finished", "error", "interrupted"] | None = None,
                  success: bool | None = None, outcome: str | None = None, group_id: str | None = None,
                  run_id: str | None = None, split: str | None = None, instance_key: str | None = None,
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                  c=Depends(ctx)) -> EpisodeList:
    f = _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key)
    eps = c.store.list_episodes(limit=limit, offset=offset, visible_groups=c.access.listing_scope(request), **f)
    return EpisodeList(episodes=eps, limit=limit, offset=offset)


@router.get("/export/episodes", summary="Export filtered episodes: JSONL (one line per step) or a bundle",
            description=FILTER_DOC)
def export_many(request: Request, format: Literal["jsonl", "bundle"] = "jsonl", task: str | None = None,
                participant: str | None = None, status: str | None = None, success: bool | None = None,
                outcome: str | None = None, group_id: str | None = None, run_id: str | None = None,
                split: str | None = None, instance_key: str | None = None,
                limit: int = Query(1000, ge=1, le=20000), c=Depends(ctx)):
    c.access.require_operator(request, "bulk export")
    f = _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key)
    scope = c.access.listing_scope(request)
    eps = [c.store.get_episode(e["id"]) for e in c.store.list_episodes(limit=limit, visible_groups=scope, **f)]
    if format == "bundle":
        extra = {}
        if run_id and c.store.get_run(run_id):
            from ..evaluation import run_artifacts

            extra = run_artifacts(c.store, run_id)  # an evaluation's bundle carries its table and plot
        return Response(bundle(eps, extra=extra), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="episodes.zip"'})
    return PlainTextResponse("".join(episode_jsonl(eps)), media_type="application/x-ndjson")


@router.get("/episodes/{episode_id}", response_model=Episode, summary="One episode with its steps")
def get_episode(episode_id: str, request: Request, prompts: bool = False, c=Depends(ctx)) -> Episode:
    ep = c.store.get_episode(episode_id, prompts=prompts)
    if ep is None:
        raise not_found("episode")
    _readable(c, request, [ep])
    return ep


@router.get("/episodes/{episode_id}/export", summary="Export one episode (jsonl, markdown or bundle)")
def export_one(episode_id: str, request: Request, format: Literal["jsonl", "markdown", "bundle"] = "markdown",
               c=Depends(ctx)):
    ep = c.store.get_episode(episode_id)
    if ep is None:
        raise not_found("episode")
    _readable(c, request, [ep])
    if format == "markdown":
        return PlainTextResponse(episode_markdown(ep), media_type="text/markdown")
    if format == "bundle":
        return Response(bundle([ep]), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="episode-{episode_id[:8]}.zip"'})
    return PlainTextResponse("".join(episode_jsonl([ep])), media_type="application/x-ndjson")
