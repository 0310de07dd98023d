"""Episodes: start (paired, same instance), stream (SSE), submit a human move, cancel; list,
filter, get, export (JSONL, Markdown, bundle) and replay stored episodes.

Who may do what is `app.access`, applied by the service layer (`app.services`) to the request's
caller: starting a game returns its token, which playing, cancelling and (without the public
gallery) reading it require; listings are scoped to the caller's games; bulk export is
operator-only on a public server.
SSE streams number their events; `Last-Event-ID` resumes after that event (live or replayed), and
every stream ends with `group_finished`. Live and replayed streams carry the runner's typed events
(`app.runner.Event`); `sse` writes one, its JSON being the event's `to_json()`."""
from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from ..evaluation import run_artifacts
from ..export import bundle, episode_jsonl, episode_markdown, replay_group_events
from ..runner import Event, GroupFinished, HumanPlayer
from ..schemas import Episode, EpisodeList, EpisodeRef, EpisodeRequest, GroupStarted, Message, SubmitRequest
from game.tasks import outcomes

from .. import services
from .deps import caller, ctx, http_error

router = APIRouter(tags=["episodes"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(index: int, event: Event) -> str:
    """One SSE message: the event's number, its type and its JSON."""
    return f"id: {index}\nevent: {event.type}\ndata: {json.dumps(event.to_json(), default=str)}\n\n"


@router.post("/episodes", response_model=GroupStarted, status_code=201,
             summary="Start one episode per participant on the same instance (paired)",
             description="Returns the game's `token`: send it as `X-Game-Token` (or `?token=` for SSE) "
                         "to play, cancel or read the game.")
async def start_episodes(body: EpisodeRequest, c=Depends(ctx), who=Depends(caller)) -> GroupStarted:
    decoding = body.decoding.model_dump(exclude_none=True) if body.decoding else {}
    try:
        instance = services.live_instance(c, body.task, body.instance)
        participants: list[Any] = []
        for p in body.participants:
            if p.human == (p.model is not None):
                raise services.ServiceError("each participant is either {\"model\": NAME} or {\"human\": true}")
            if p.human:
                participants.append(HumanPlayer(name=p.name or "human", idle_timeout_s=c.settings.human_idle_s))
            else:
                assert p.model is not None  # checked just above
                participants.append(services.model_player(c, p.model, body.task, decoding))
        group = await services.start_group(c, who, instance, participants, {"decoding": decoding})
    except services.ServiceError as exc:
        raise http_error(exc) from None
    refs = []
    for eid in group.episode_ids:
        ep = c.store.get_episode(eid, steps=False)
        refs.append(EpisodeRef(episode_id=eid, participant=ep["participant"], kind=ep["participant_kind"]))
    return GroupStarted(group_id=group.group_id, task=instance.task, instance_key=instance.key, episodes=refs,
                        events_url=f"/api/groups/{group.group_id}/events",
                        token=services.game_token(c, group.group_id))


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
    yield sse(max(i + 1, after + 1), GroupFinished(group_id, replay=True))


def _stream(c, who, after: int, *, group_id: str | None = None, episode_id: str | None = None,
            request: Request, delay: float = 0.0) -> StreamingResponse:
    try:
        source = services.open_stream(c, who, group_id=group_id, episode_id=episode_id)
    except services.ServiceError as exc:
        raise http_error(exc) from None
    if source.live is not None:
        _check_resume(after, len(source.live.events))
        body = _stream_live(source.live, after, episode_id, request)
    else:
        body = _stream_stored(c, source.group_id, source.episode_ids, after, delay)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/groups/{group_id}/events", summary="Server-Sent Events of every episode in a group",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def group_events(group_id: str, request: Request,
                       last_event: str | None = Header(None, alias="Last-Event-ID", max_length=64),
                       delay: float = Query(0, ge=0, le=10, description="seconds between replayed steps"),
                       token: str | None = Query(None, max_length=200, description="the game's token"),
                       c=Depends(ctx), who=Depends(caller)):
    return _stream(c, who, last_event_id(last_event), group_id=group_id, request=request, delay=delay)


@router.get("/episodes/{episode_id}/events", summary="Server-Sent Events of one episode (live, else replayed)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def episode_events(episode_id: str, request: Request,
                         last_event: str | None = Header(None, alias="Last-Event-ID", max_length=64),
                         delay: float = Query(0, ge=0, le=10, description="seconds between replayed steps"),
                         token: str | None = Query(None, max_length=200, description="the game's token"),
                         c=Depends(ctx), who=Depends(caller)):
    return _stream(c, who, last_event_id(last_event), episode_id=episode_id, request=request, delay=delay)


@router.post("/episodes/{episode_id}/submit", response_model=Message, summary="A human player's move")
async def submit(episode_id: str, body: SubmitRequest, c=Depends(ctx), who=Depends(caller)) -> Message:
    try:
        services.submit_move(c, who, episode_id, body.text)
    except services.ServiceError as exc:
        raise http_error(exc) from None
    return Message(detail="submitted")


@router.post("/episodes/{episode_id}/cancel", response_model=Message, summary="Stop a running group")
async def cancel(episode_id: str, c=Depends(ctx), who=Depends(caller)) -> Message:
    try:
        services.cancel_game(c, who, episode_id)
    except services.ServiceError as exc:
        raise http_error(exc) from None
    return Message(detail="cancelled")


def _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key) -> dict:
    known = outcomes()   # the registry's, as it is now
    if outcome is not None and outcome not in known:
        raise HTTPException(status_code=400, detail=f"unknown outcome {outcome!r}; use one of {', '.join(known)}")
    return dict(task=task, participant=participant, status=status, success=success, outcome=outcome,
                group_id=group_id, eval_run_id=run_id, eval_split=split, instance_key=instance_key)


MAX_OFFSET = 2**62
FILTER_DOC = "filters: task, participant, status, success, outcome (last step's), group_id, run_id, split, instance_key"


@router.get("/episodes", response_model=EpisodeList, summary="List and filter episodes", description=FILTER_DOC)
def list_episodes(task: str | None = None, participant: str | None = None,
                  status: Literal["running", "finished", "error", "interrupted"] | None = None,
                  success: bool | None = None, outcome: str | None = None, group_id: str | None = None,
                  run_id: str | None = None, split: str | None = None, instance_key: str | None = None,
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                  c=Depends(ctx), who=Depends(caller)) -> EpisodeList:
    f = _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key)
    eps = services.list_episodes(c, who, limit=limit, offset=offset, **f)
    return EpisodeList(episodes=eps, limit=limit, offset=offset)


@router.get("/export/episodes", summary="Export filtered episodes: JSONL (one line per step) or a bundle",
            description=FILTER_DOC)
def export_many(format: Literal["jsonl", "bundle"] = "jsonl", task: str | None = None,
                participant: str | None = None, status: str | None = None, success: bool | None = None,
                outcome: str | None = None, group_id: str | None = None, run_id: str | None = None,
                split: str | None = None, instance_key: str | None = None,
                limit: int = Query(1000, ge=1, le=20000), c=Depends(ctx), who=Depends(caller)):
    f = _filters(task, participant, status, success, outcome, group_id, run_id, split, instance_key)
    try:
        eps = services.export_episodes(c, who, limit=limit, **f)
    except services.ServiceError as exc:
        raise http_error(exc) from None
    if format == "bundle":
        extra = {}
        if run_id and c.store.get_run(run_id):
            extra = run_artifacts(c.store, run_id)  # an evaluation's bundle carries its table and plot
        return Response(bundle(eps, extra=extra), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="episodes.zip"'})
    return PlainTextResponse("".join(episode_jsonl(eps)), media_type="application/x-ndjson")


@router.get("/episodes/{episode_id}", response_model=Episode, summary="One episode with its steps")
def get_episode(episode_id: str, prompts: bool = False, c=Depends(ctx), who=Depends(caller)) -> dict:
    try:
        return services.readable_episode(c, who, episode_id, prompts=prompts)
    except services.ServiceError as exc:
        raise http_error(exc) from None


@router.get("/episodes/{episode_id}/export", summary="Export one episode (jsonl, markdown or bundle)")
def export_one(episode_id: str, format: Literal["jsonl", "markdown", "bundle"] = "markdown",
               c=Depends(ctx), who=Depends(caller)):
    try:
        ep = services.readable_episode(c, who, episode_id, prompts=True)
    except services.ServiceError as exc:
        raise http_error(exc) from None
    if format == "markdown":
        return PlainTextResponse(episode_markdown(ep), media_type="text/markdown")
    if format == "bundle":
        return Response(bundle([ep]), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="episode-{episode_id[:8]}.zip"'})
    return PlainTextResponse("".join(episode_jsonl([ep])), media_type="application/x-ndjson")
