"""Task instances and their game sessions: the one place that turns a seeded instance (a GP deal
under a rule, a V-IRL route under an action space) into prompts, images and graded steps.

An `Instance` is plain JSON (task + parameters) so it can be stored, sent over the API and
replayed. `open_session(instance)` builds the engine episode (`game.gp.episode.Episode` or
`game.virl.episode.VirlEpisode`) and wraps it in a `Session` with one interface for the runner:
`prompt()`, `image()`, `step(text) -> StepResult`, `done`, `success`. Grading, budgets and
feedback strings all come from the engines; prompts from `models.prompts`.

Failure taxonomy (`StepResult.outcome`), from the paper's reward classes:
GP — `correct` (+5), `partial` (+1), `wrong_value` (−1), `float_rounding` (0), `wrong_cards` (−1.5,
VL recognition), `wrong_numbers` (−2 each), `illegal_formula` (−3), `aggregated_error` (several
penalties), `step_limit` (−1, budget spent); plus the exact-arithmetic flags `exact_correct` and
`float_rejected` (a right answer the paper's float check rejected).
V-IRL — `correct` (+1), `wrong_action` (−1), `wrong_observation` (−1.5), `budget_exceeded` (−1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

TASKS = ("gp-l", "gp-vl", "virl-l", "virl-vl")
GP_OUTCOMES = ("correct", "partial", "wrong_value", "float_rounding", "wrong_cards", "wrong_numbers",
               "illegal_formula", "aggregated_error", "step_limit")
VIRL_OUTCOMES = ("correct", "wrong_action", "wrong_observation", "budget_exceeded")
OUTCOMES = tuple(dict.fromkeys(GP_OUTCOMES + VIRL_OUTCOMES))


class InstanceError(ValueError):
    """A bad instance description (message is shown to the user as is)."""


@dataclass(frozen=True)
class Instance:
    """One seeded task instance: `task` plus JSON parameters.

    GP: `deal_id` (e.g. `HKC5D2C4`, `-30` suffix for another target), `rule` (`face10`/`face_jqk`),
    optional `verify_iter` (5), `enable_verification` (true), `eg` (false: the `_EG` prompt).
    V-IRL: `source` (`bundled:helsinki`, a release directory), `route` (index or id; drawn from the
    seed when absent), `seed`, optional `heading`, `absolute_action` (true = ID), `verify_iter` (2).
    """

    task: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InstanceError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")

    @property
    def is_gp(self) -> bool:
        return self.task.startswith("gp")

    @property
    def vision(self) -> bool:
        return self.task.endswith("-vl")

    @property
    def key(self) -> str:
        """A short printable description used for filtering and pairing."""
        p = self.params
        if self.is_gp:
            return f"{p.get('deal_id')}/{p.get('rule', 'face10')}"
        route = p.get("route")
        where = f"route{route}" if route is not None else f"seed{p.get('seed', 0)}"
        return f"{p.get('source', 'bundled:helsinki')}#{where}/{'abs' if p.get('absolute_action', True) else 'rel'}"

    def to_dict(self) -> dict:
        return {"task": self.task, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> "Instance":
        if not isinstance(data, dict) or "task" not in data:
            raise InstanceError("an instance needs a task and params")
        return cls(str(data["task"]), dict(data.get("params") or {}))


@dataclass
class StepResult:
    """One graded call as the engines report it; the runner adds the reply text and timing
    (`runner.StepDone`, stored as a `steps` row, served as `schemas.Step`)."""
    call: int
    reward: float
    feedback: str
    outcome: str
    graded: bool
    terminated: bool
    truncated: bool
    parsed: dict
    exact_correct: bool | None = None
    float_rejected: bool | None = None


# ----------------------------------------------------------------------------------- GP


def _gp_outcome_name(outcome) -> str:
    return outcome.value if hasattr(outcome, "value") else str(outcome)


class GPSession:
    """A GeneralPoints episode behind the runner's interface."""

    def __init__(self, instance: Instance) -> None:
        from game.gp.cards import Rule
        from game.gp.deal import Deal
        from game.gp.episode import Episode

        p = instance.params
        try:
            deal = Deal.from_id(str(p.get("deal_id", "")))
            rule = Rule.parse(p.get("rule", "face10"))
            verify_iter = int(p.get("verify_iter", 5))
            self.episode = Episode(deal, rule, language_only=not instance.vision, verify_iter=verify_iter,
                                   enable_verification=bool(p.get("enable_verification", True)),
                                   lenient=bool(p.get("lenient", False)))
        except (ValueError, TypeError) as exc:
            raise InstanceError(str(exc)) from None
        if not 1 <= verify_iter <= 20:
            raise InstanceError("verify_iter must be between 1 and 20")
        self.instance = instance
        self.eg = bool(p.get("eg", False))
        self._image = None

    @property
    def vision(self) -> bool:
        return self.instance.vision

    def prompt(self) -> str:
        from models.prompts import gp_prompt

        ep = self.episode
        return gp_prompt(ep.deal.labels, ep.rule, ep.target, vision=self.vision, eg=self.eg)

    def image(self):
        if not self.vision:
            return None
        if self._image is None:
            from game.gp.render import table_image

            self._image = table_image(self.episode.deal.cards)
        return self._image

    @property
    def done(self) -> bool:
        return self.episode.done

    @property
    def success(self) -> bool:
        return self.episode.success

    @property
    def exact_success(self) -> bool:
        return any(s.verdict.exact_correct for s in self.episode.steps if s.graded)

    def step(self, text: str) -> StepResult:
        rec = self.episode.step(text)
        v = rec.verdict
        parsed = {"formula": v.formula, "cards": v.cards, "numbers_used": v.numbers_used,
                  "value": v.paper_value, "exact_value": v.exact_value, "parse_source": v.parse_source}
        return StepResult(rec.call, rec.reward, rec.verify_info, _gp_outcome_name(v.outcome), rec.graded,
                          rec.terminated, rec.truncated, parsed, v.exact_correct, v.float_rejected)

    def describe(self) -> dict:
        ep = self.episode
        return {"deal_id": ep.deal.id, "cards": ep.deal.labels, "card_ids": ep.deal.card_ids,
                "numbers": ep.numbers, "target": ep.target, "rule": ep.rule.value,
                "verify_iter": ep.verify_iter}


# -------------------------------------------------------------------------------- V-IRL


@lru_cache(maxsize=8)
def virl_data(source: str):
    """The route set for a source (cached: bundled sets are loaded once per process)."""
    from game.virl.datasets import open_source
    from game.virl.routes import RouteDataError

    try:
        return open_source(source)
    except (RouteDataError, OSError, ValueError) as exc:
        raise InstanceError(f"cannot open V-IRL source {source!r}: {exc}") from None


def _route_index(data, route) -> int | None:
    if route is None:
        return None
    if isinstance(route, int) or (isinstance(route, str) and route.isdigit()):
        idx = int(route)
        if not 0 <= idx < len(data.routes):
            raise InstanceError(f"route index {idx} out of range (0..{len(data.routes) - 1})")
        return idx
    try:
        return data.route(route).index
    except (KeyError, ValueError, LookupError) as exc:
        raise InstanceError(str(exc)) from None


class VirlSession:
    """A V-IRL episode behind the runner's interface."""

    def __init__(self, instance: Instance) -> None:
        from game.virl.episode import start_episode

        p = instance.params
        source = str(p.get("source") or "bundled:helsinki")
        self.data = virl_data(source)
        idx = _route_index(self.data, p.get("route"))
        try:
            seed = int(p.get("seed", 0))
            verify_iter = int(p.get("verify_iter", 2))
            heading = p.get("heading")
            self.episode = start_episode(
                self.data.routes, seed=seed, route_idx=idx,
                heading=None if heading is None else int(heading),
                absolute_action=bool(p.get("absolute_action", True)), mapping=self.data.mapping,
                verify_iter=verify_iter, language_only=not instance.vision)
        except (ValueError, TypeError, IndexError) as exc:
            raise InstanceError(str(exc)) from None
        if not 1 <= verify_iter <= 10:
            raise InstanceError("verify_iter must be between 1 and 10")
        self.instance = instance
        self.eg = bool(p.get("eg", False))
        self._grid: tuple[int, Any] | None = None

    @property
    def vision(self) -> bool:
        return self.instance.vision

    def prompt(self) -> str:
        from models.prompts import virl_prompt

        ep = self.episode
        return virl_prompt(ep.instruction_text, ep.obs_act_seq(), ep.action_space_text, vision=self.vision,
                           eg=self.eg)

    def image(self):
        if not self.vision:
            return None
        ep = self.episode
        if self._grid is None or self._grid[0] != ep.index:
            from PIL import Image

            from game.virl.render import street_view_grid

            pano, rotation = self.data.panorama(ep.entry)
            self._grid = (ep.index, Image.fromarray(street_view_grid(pano, ep.entry.heading, rotation=rotation)))
        return self._grid[1]

    @property
    def done(self) -> bool:
        return self.episode.done

    @property
    def success(self) -> bool:
        return self.episode.success

    @property
    def exact_success(self) -> bool | None:
        return None

    def step(self, text: str) -> StepResult:
        rec = self.episode.step(text)
        if not rec.graded:
            outcome = "budget_exceeded"
        elif rec.reward == 1.0:
            outcome = "correct"
        elif rec.reward == -1.5:
            outcome = "wrong_observation"
        else:
            outcome = "wrong_action"
        parsed = {"action": _jsonable(rec.parsed_action), "observation": _jsonable(rec.parsed_observation),
                  "gt_action": rec.gt_action, "rail_index": rec.rail_index_after}
        return StepResult(rec.call, rec.reward, rec.verify_info, outcome, rec.graded, rec.terminated,
                          rec.truncated, parsed)

    def describe(self) -> dict:
        ep = self.episode
        route = ep.rail.route
        return {"source": self.data.name, "route_id": route.route_id, "route_index": route.index,
                "instruction": ep.instruction_text, "action_space": ep.action_space_text,
                "rail_length": len(ep.rail.entries), "verify_iter": ep.verify_iter}


def _jsonable(value):
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


Session = GPSession | VirlSession


def open_session(instance: Instance) -> Session:
    """A fresh session for `instance`; raises `InstanceError` with a clear message on bad input."""
    return GPSession(instance) if instance.is_gp else VirlSession(instance)
