"""Instances without a model: deal and inspect GP hands, render them, verify a formula, solve;
list and describe V-IRL routes. GP computations go through `services.compute` (cheap ones inline,
the rest in the fair worker pool, per caller)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from game.gp.deal import MAX_TARGET
from game.tasks import open_session, task_name

from .. import jobs, services
from ..schemas import DealInfo, RouteDetail, RouteList, RouteSummary, SolveResponse, VerifyRequest, VerifyResponse
from .deps import bad_request, caller, ctx, http_error

router = APIRouter(tags=["instances"])


async def _job(c, who, fn, *args):
    """A GP computation for the caller: bad input is a 400 with its message; past the time limit or
    with a lost worker a 503 (with Retry-After), never a hung server or a 500."""
    try:
        return await services.compute(c, who, fn, *args)
    except services.ServiceError as exc:
        raise http_error(exc) from None


@router.get("/gp/deal", response_model=DealInfo, summary="Deal a seeded GeneralPoints hand",
            description="An unreachable target (e.g. 461 under J/Q/K = 10) is refused at once with the "
                        "nearest reachable targets.")
async def gp_deal(seed: int = Query(0, ge=0, le=2**63 - 1), rule: str = Query("face10", max_length=16),
                  ood: bool = False, suits: str = Query("mixed", pattern="^(mixed|red|black)$"),
                  mode: str = Query("paper", pattern="^(paper|deck)$"),
                  target: int = Query(24, ge=1, le=MAX_TARGET), c=Depends(ctx), who=Depends(caller)) -> DealInfo:
    return await _job(c, who, jobs.gp_deal, seed, rule, ood, suits, mode, target)


@router.get("/gp/deals/{deal_id}", response_model=DealInfo, summary="Inspect a hand by id")
async def gp_inspect(deal_id: str = Path(max_length=32), rule: str = Query("face10", max_length=16),
                     c=Depends(ctx), who=Depends(caller)) -> DealInfo:
    return await _job(c, who, jobs.gp_inspect, deal_id, rule)


@router.get("/gp/deals/{deal_id}/image.png", response_class=Response, summary="The GP-VL table image",
            responses={200: {"content": {"image/png": {}}}})
async def gp_image(deal_id: str = Path(max_length=32), resolution: int = Query(600, ge=100, le=1200),
                   c=Depends(ctx), who=Depends(caller)) -> Response:
    png = await _job(c, who, jobs.gp_image_png, deal_id, resolution)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/gp/deals/{deal_id}/solutions", response_model=SolveResponse, summary="Solve a hand")
async def gp_solve(deal_id: str = Path(max_length=32), rule: str = Query("face10", max_length=16),
                   limit: int = Query(50, ge=1, le=1000), c=Depends(ctx), who=Depends(caller)) -> SolveResponse:
    return await _job(c, who, jobs.gp_solve, deal_id, rule, limit)


@router.post("/gp/verify", response_model=VerifyResponse, summary="Grade a formula or a raw reply")
async def gp_verify(body: VerifyRequest, c=Depends(ctx), who=Depends(caller)) -> VerifyResponse:
    return await _job(c, who, jobs.gp_verify, body.deal_id, body.rule, body.formula, body.reply, body.vision,
                      body.lenient)


@router.get("/gp/evaluation-hands/{config}", response_model=list[str],
            summary="The paper's evaluation hand list (deal ids) for a GP config")
async def gp_eval_hands(config: str = Path(max_length=32), n: int = Query(234, ge=1, le=2000),
                        seed: int = Query(42, ge=0, le=2**63 - 1), c=Depends(ctx),
                        who=Depends(caller)) -> list[str]:
    return await _job(c, who, jobs.gp_evaluation_hands, config, n, seed)


@router.get("/virl/routes", response_model=RouteList, summary="List V-IRL routes of a source")
def virl_routes(source: str | None = Query(None, max_length=512), offset: int = Query(0, ge=0, le=2**62),
                limit: int = Query(100, ge=1, le=1000), c=Depends(ctx)) -> RouteList:
    try:
        data = services.route_source(c, source)
    except services.ServiceError as exc:
        raise bad_request(str(exc)) from None
    routes = [RouteSummary(index=r.index, route_id=r.route_id, dest_name=r.dest_name, n_turns=r.n_turns)
              for r in data.routes[offset:offset + limit]]
    return RouteList(source=data.name, total=len(data.routes), routes=routes)


@router.get("/virl/routes/{route}", response_model=RouteDetail,
            summary="Describe one route's episode (instruction, action space, first prompt)")
def virl_route(route: str, source: str | None = Query(None, max_length=512), seed: int = Query(0, ge=0),
               absolute_action: bool = True, c=Depends(ctx)) -> dict:
    params = {"route": route, "seed": seed, "absolute_action": absolute_action}
    try:
        session = open_session(services.live_instance(c, task_name("virl"), {**params, "source": source} if source else params))
    except services.ServiceError as exc:
        raise bad_request(str(exc)) from None
    return session.describe() | {"prompt": session.prompt()}
