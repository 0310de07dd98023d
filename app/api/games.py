"""Instances without a model: deal and inspect GP hands, render them, verify a formula, solve;
list and describe V-IRL routes."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from .. import services
from ..schemas import DealInfo, RouteDetail, RouteList, RouteSummary, SolveResponse, VerifyRequest, VerifyResponse
from .deps import bad_request, ctx

router = APIRouter(tags=["instances"])


def _deal(deal_id: str):
    from game.gp.deal import Deal

    try:
        return Deal.from_id(deal_id)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _rule(rule: str):
    from game.gp.cards import Rule

    try:
        return Rule.parse(rule)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _info(deal, rule) -> DealInfo:
    sols = deal.solutions(rule)
    return DealInfo(deal_id=deal.id, cards=deal.labels, card_ids=deal.card_ids, numbers=deal.numbers(rule),
                    target=deal.target, rule=rule.value, solvable=bool(sols), n_solutions=len(sols))


@router.get("/gp/deal", response_model=DealInfo, summary="Deal a seeded GeneralPoints hand")
async def gp_deal(seed: int = Query(0, ge=0, le=2**63 - 1), rule: str = "face10", ood: bool = False,
            suits: str = Query("mixed", pattern="^(mixed|red|black)$"),
            mode: str = Query("paper", pattern="^(paper|deck)$"), target: int = Query(24, ge=1, le=1000)) -> DealInfo:
    from game.gp.deal import DealConfig, deal

    r = _rule(rule)
    try:
        hand = deal(seed, DealConfig(r, ood=ood, suits=suits, mode=mode, target=target))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return _info(hand, r)


@router.get("/gp/deals/{deal_id}", response_model=DealInfo, summary="Inspect a hand by id")
async def gp_inspect(deal_id: str, rule: str = "face10") -> DealInfo:
    return _info(_deal(deal_id), _rule(rule))


@router.get("/gp/deals/{deal_id}/image.png", response_class=Response, summary="The GP-VL table image",
            responses={200: {"content": {"image/png": {}}}})
def gp_image(deal_id: str, resolution: int = Query(600, ge=100, le=1200)) -> Response:
    from game.gp.render import encode, table_image

    hand = _deal(deal_id)
    return Response(encode(table_image(hand.cards, resolution=resolution), "png"), media_type="image/png",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/gp/deals/{deal_id}/solutions", response_model=SolveResponse, summary="Solve a hand")
async def gp_solve(deal_id: str, rule: str = "face10", limit: int = Query(50, ge=1, le=1000)) -> SolveResponse:
    from game.gp.solver import distinct_solutions

    hand, r = _deal(deal_id), _rule(rule)
    nums = hand.numbers(r)
    return SolveResponse(deal_id=hand.id, rule=r.value, numbers=nums, target=hand.target,
                         solutions=list(distinct_solutions(nums, hand.target))[:limit],
                         reference_count=len(hand.solutions(r)))


@router.post("/gp/verify", response_model=VerifyResponse, summary="Grade a formula or a raw reply")
async def gp_verify(body: VerifyRequest) -> VerifyResponse:
    from game.gp.verifier import verify

    hand, r = _deal(body.deal_id), _rule(body.rule)
    if (body.formula is None) == (body.reply is None):
        raise bad_request("give exactly one of 'formula' (a bare formula) or 'reply' (a raw model reply)")
    if body.reply is not None:
        text = body.reply
    else:
        from game.tasks import formula_reply

        text = formula_reply(hand.labels, hand.numbers(r), body.formula, hand.target)
    v = verify(text, hand.numbers(r), hand.labels, target=hand.target, language_only=not body.vision,
               lenient=body.lenient)
    d = v.to_dict()
    return VerifyResponse(deal_id=hand.id, rule=r.value, numbers=hand.numbers(r), reward=v.reward,
                          feedback=v.verify_info, outcome=d["outcome"], terminated=v.terminated,
                          formula=v.formula if isinstance(v.formula, (str, type(None))) else str(v.formula),
                          cards=[str(c) for c in v.cards], exact_value=v.exact_value, exact_correct=v.exact_correct,
                          float_rejected=v.float_rejected, verdict=d)


@router.get("/gp/evaluation-hands/{config}", response_model=list[str],
            summary="The paper's evaluation hand list (deal ids) for a GP config")
def gp_eval_hands(config: str, n: int = Query(234, ge=1, le=2000), seed: int = Query(42, ge=0)) -> list[str]:
    from game.gp.deal import evaluation_hands

    try:
        return [h.id for h in evaluation_hands(config, n, seed)]
    except ValueError as exc:
        raise bad_request(str(exc)) from None


@router.get("/virl/routes", response_model=RouteList, summary="List V-IRL routes of a source")
def virl_routes(source: str | None = Query(None, max_length=512), offset: int = Query(0, ge=0),
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
               absolute_action: bool = True, c=Depends(ctx)) -> RouteDetail:
    from game.tasks import open_session

    params = {"route": route, "seed": seed, "absolute_action": absolute_action}
    try:
        session = open_session(services.live_instance(c, "virl-l", {**params, "source": source} if source else params))
    except services.ServiceError as exc:
        raise bad_request(str(exc)) from None
    return session.describe() | {"prompt": session.prompt()}
