"""The CPU-bound instance computations the API and UI run through `app.workers`: plain top-level
functions of plain arguments that return plain data (picklable both ways), and which of their calls
are cheap enough to answer inline (`is_cheap`).

Each raises `ValueError` (including `game.gp.deal.DealError`) with a message for the user.
"""
from __future__ import annotations

from game.gp.cards import Rule
from game.gp.deal import Deal, DealConfig, DealMode, deal, evaluation_hands, reachable_targets
from game.gp.solver import distinct_solutions
from game.gp.verifier import verify

CHEAP_TARGET = 24          # the paper's target: dense (a hand in ~1.4 draws), its tables warmed at start-up
CHEAP_TEXT_CHARS = 2048    # a verify of at most this much text takes well under a millisecond


def is_cheap(fn, args: tuple) -> bool:
    """Whether `fn(*args)` is bounded and small enough to run inline (a few milliseconds at most,
    usually microseconds, after `warm`): a deal for the target 24, a hand's info, a verify of a
    short text on a target-24 hand. Everything else can be slow (rare targets draw many hands,
    solving and rendering are tens of milliseconds) and goes to the fair pool."""
    if fn is gp_deal:
        return args[5] == CHEAP_TARGET
    if fn is gp_inspect:
        return _target_of(args[0]) == CHEAP_TARGET
    if fn is gp_verify:
        formula, reply = args[2], args[3]
        text = (formula or "") + (reply or "")
        return _target_of(args[0]) == CHEAP_TARGET and len(text) <= CHEAP_TEXT_CHARS
    return False


def _target_of(deal_id: str) -> int:
    """The target a deal id names; a malformed id counts as cheap (it is refused at once)."""
    try:
        return Deal.from_id(str(deal_id)[:64]).target
    except ValueError:
        return CHEAP_TARGET


def warm() -> None:
    """Build what inline and pooled jobs share once per process: imports, the value table behind
    every reachable-target check (about half a second), the default configuration's reachable targets."""
    reachable_targets(DealConfig())


def _info(hand, rule) -> dict:
    sols = hand.solutions(rule)
    return dict(deal_id=hand.id, cards=hand.labels, card_ids=hand.card_ids, numbers=hand.numbers(rule),
                target=hand.target, rule=rule.value, solvable=bool(sols), n_solutions=len(sols))


def gp_deal(seed: int, rule: str, ood: bool, suits: str, mode: DealMode, target: int) -> dict:
    """The first solvable hand of `seed`'s stream (unreachable targets refused at once)."""
    r = Rule.parse(rule)
    return _info(deal(seed, DealConfig(r, ood=ood, suits=suits, mode=mode, target=target)), r)


def gp_inspect(deal_id: str, rule: str) -> dict:
    return _info(Deal.from_id(deal_id), Rule.parse(rule))


def gp_solve(deal_id: str, rule: str, limit: int) -> dict:
    hand, r = Deal.from_id(deal_id), Rule.parse(rule)
    nums = hand.numbers(r)
    return dict(deal_id=hand.id, rule=r.value, numbers=nums, target=hand.target,
                solutions=list(distinct_solutions(nums, hand.target))[:limit],
                reference_count=len(hand.solutions(r)))


def gp_image_png(deal_id: str, resolution: int) -> bytes:
    # lazy: the renderer loads PIL, which the API server (it imports this module) otherwise never loads
    from game.gp.render import encode, table_image

    return encode(table_image(Deal.from_id(deal_id).cards, resolution=resolution), "png")


def gp_verify(deal_id: str, rule: str, formula: str | None, reply: str | None, vision: bool,
              lenient: bool) -> dict:
    # lazy: game.tasks loads the V-IRL engine too (geopy; ~0.4 s and ~28 MB per worker process), for one helper
    from game.tasks import formula_reply

    hand, r = Deal.from_id(deal_id), Rule.parse(rule)
    if (formula is None) == (reply is None):
        raise ValueError("give exactly one of 'formula' (a bare formula) or 'reply' (a raw model reply)")
    if reply is not None:
        text = reply
    else:
        assert formula is not None  # exactly one of them is given
        text = formula_reply(hand.labels, hand.numbers(r), formula, hand.target)
    v = verify(text, hand.numbers(r), hand.labels, target=hand.target, language_only=not vision, lenient=lenient)
    d = v.to_dict()
    return dict(deal_id=hand.id, rule=r.value, numbers=hand.numbers(r), reward=v.reward, feedback=v.verify_info,
                outcome=d["outcome"], terminated=v.terminated,
                formula=v.formula if isinstance(v.formula, (str, type(None))) else str(v.formula),
                cards=[str(c) for c in v.cards], exact_value=v.exact_value, exact_correct=v.exact_correct,
                float_rejected=v.float_rejected, verdict=d)


def gp_evaluation_hands(config: str, n: int, seed: int) -> list[str]:
    return [h.id for h in evaluation_hands(config, n, seed)]


