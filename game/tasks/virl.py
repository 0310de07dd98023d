"""V-IRL navigation as registry tasks (`virl-l` text, `virl-vl` 2×2 street views): config,
session, evaluation streams, the person's-move reply, the outcome taxonomy and the route sets.

Outcomes (`game.virl.verifier.Outcome`): `correct` (+1), `wrong_action` (−1), `wrong_observation`
(−1.5), `budget_exceeded` (−1, the call after the 2-try budget ran out; its text is ignored).
Each step record's `state` says where the walker stands after the call (`VirlSession.place`).

Route sets are opened once per process (`route_data`, cached): bundled sets by name
(`bundled:helsinki`, `bundled:helsinki-ood`) or a release directory.
"""
from __future__ import annotations

import json
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from ..prompts import virl_prompt
from ..virl.datasets import open_source
from ..virl.episode import DEFAULT_DROP_RATE, DEFAULT_VERIFY_ITER, start_episode
from ..virl.routes import RouteDataError
from ..virl.verifier import Outcome
from .base import (COMMON_STAGE_NOTES, EpisodeSession, FindingsWords, Instance, InstanceError, Split, StepResult, Task,
                   jsonable, param)

DEFAULT_SOURCES = {"id": "bundled:helsinki", "ood": "bundled:helsinki-ood"}
TRAINING_SEED_BASE = 1_000_000     # training episode seeds start here (evaluation: seed + i, i < 10,000)
RNG_MODES = ("native", "reference")


@lru_cache(maxsize=8)
def route_data(source: str):
    """The route set of a source, opened once per process; `InstanceError` when it cannot be read."""
    try:
        return open_source(source)
    except (RouteDataError, OSError, ValueError) as exc:
        raise InstanceError(f"cannot open V-IRL source {source!r}: {exc}") from None


def route_index(data, route) -> int | None:
    """A route given by index (int or digits) or id, as an index into `data.routes`."""
    if route is None:
        return None
    if isinstance(route, int) or str(route).strip().lstrip("-").isdigit():
        idx = int(route)
        if not 0 <= idx < len(data.routes):
            raise InstanceError(f"route index {idx} out of range (0..{len(data.routes) - 1})")
        return idx
    try:
        return data.route(route).index
    except (KeyError, ValueError, LookupError) as exc:
        raise InstanceError(str(exc)) from None


_GRIDS: "OrderedDict[tuple, Any]" = OrderedDict()
_GRIDS_LOCK = threading.Lock()
GRID_CACHE = 32        # street-view grids kept (a 2405² RGB grid is ~17 MB as a PIL image)


def grid_image(data, entry):
    """The 2×2 street-view grid (PIL) at a rail entry: the same image for every session standing at
    the same place with the same heading (a GRPO group, the id and rule-ood splits of one episode),
    so the last `GRID_CACHE` grids are kept (rendering one takes seconds on a CPU)."""
    # lazy: PIL and the street-view renderer; text tasks and `import game.tasks` never need them
    from PIL import Image

    from ..virl.render import street_view_grid

    key = (data.name, entry.pano_id, round(entry.position[0], 7), round(entry.position[1], 7), entry.heading)
    with _GRIDS_LOCK:
        if key in _GRIDS:
            _GRIDS.move_to_end(key)
            return _GRIDS[key]
    pano, rotation = data.panorama(entry)
    image = Image.fromarray(street_view_grid(pano, entry.heading, rotation=rotation))
    with _GRIDS_LOCK:
        _GRIDS[key] = image
        while len(_GRIDS) > GRID_CACHE:
            _GRIDS.popitem(last=False)
    return image


@dataclass(frozen=True)
class VirlConfig:
    """One V-IRL instance and how it is played."""

    source: str = param(DEFAULT_SOURCES["id"], "str", "route set: bundled:helsinki, bundled:helsinki-ood, a directory")
    route: int | str | None = param(None, "route", "route index or id (None: drawn from the seed)")
    seed: int = param(0, "int", "episode seed: route (when not given), initial heading, rail drops", 0, 2**63 - 1)
    heading: int | None = param(None, "int?", "initial heading in degrees (None: drawn from the seed)", 0, 359)
    absolute_action: bool = param(True, "bool", "true: compass actions (ID); false: relative turns (rule OOD)")
    verify_iter: int = param(DEFAULT_VERIFY_ITER, "int", "tries per position (the paper: 2)", 1, 10)
    eg: bool = param(False, "bool", "the `_EG` prompt variant")
    drop_rate: float = param(DEFAULT_DROP_RATE, "float", "chance of dropping each interpolated rail candidate", 0, 1)
    rng_mode: str = param("native", "str", "native (a generator per draw) or reference (the reference's one "
                                           "global stream: a seed equal to its `random.seed` replays its rail)")

    def __post_init__(self) -> None:
        if self.rng_mode not in RNG_MODES:
            raise InstanceError(f"rng_mode must be one of {', '.join(RNG_MODES)}, got {self.rng_mode!r}")


class VirlSession(EpisodeSession):
    """A V-IRL episode (`game.virl.episode.VirlEpisode`) behind the registry's session interface."""

    def __init__(self, task: "VirlTask", instance: Instance) -> None:
        cfg = instance.config
        self.data = route_data(cfg.source)
        if task.vision and not self.data.has_images:
            raise InstanceError(f"{self.data.name}: no street views or map features to show for {task.name}")
        idx = route_index(self.data, cfg.route)
        super().__init__(task, instance, start_episode(
            self.data.routes, seed=cfg.seed, route_idx=idx, heading=cfg.heading, absolute_action=cfg.absolute_action,
            mapping=self.data.mapping, verify_iter=cfg.verify_iter, language_only=not task.vision,
            drop_rate=cfg.drop_rate, rng_mode=cfg.rng_mode))
        self._grid: tuple[int, Any] | None = None

    def prompt(self) -> str:
        ep = self.episode
        return virl_prompt(ep.instruction_text, ep.obs_act_seq(), ep.action_space_text, vision=self.vision,
                           eg=self.config.eg)

    def image(self):
        if not self.vision:
            return None
        ep = self.episode
        if self._grid is None or self._grid[0] != ep.index:
            self._grid = (ep.index, grid_image(self.data, ep.entry))
        return self._grid[1]

    @property
    def exact_success(self) -> None:
        return None

    @property
    def positions(self) -> int:
        return len(self.episode.rail.entries)

    def step(self, text: str) -> StepResult:
        rec = self.episode.step(text)
        parsed = {"action": jsonable(rec.parsed_action), "observation": jsonable(rec.parsed_observation),
                  "gt_action": rec.gt_action, "rail_index": rec.rail_index_after}
        result = StepResult(rec.call, rec.reward, rec.verify_info, rec.outcome.value, rec.graded, rec.terminated,
                            rec.truncated, parsed, state=self.place())
        return self._record(result)

    def place(self) -> dict:
        """Where the walker stands now, as JSON (each step record's `state`): `rail_index`, the last
        rail position it reached; that position's `position` ([lat, lng]), `heading` (degrees) and
        `pano_id`; and `walk`, the positions reached so far in order, the start first (the path the
        UI's map draws). A budget-exhausted call leaves the walker where it stood, although the
        engine's own index (`parsed["rail_index"]`, the reference's) has moved on."""
        ep = self.episode
        entries = ep.rail.entries
        here = entries[ep.visited[-1]]
        return {"rail_index": ep.visited[-1], "position": [float(x) for x in here.position],
                "heading": int(here.heading), "pano_id": here.pano_id,
                "walk": [[float(x) for x in entries[i].position] for i in ep.visited]}

    def describe(self) -> dict:
        ep = self.episode
        route = ep.rail.route
        return {"source": self.data.name, "route_id": route.route_id, "route_index": route.index,
                "instruction": ep.instruction_text, "action_space": ep.action_space_text,
                "rail_length": len(ep.rail.entries), "verify_iter": ep.verify_iter}


def action_reply(text: str) -> str:
    """A person's action (e.g. `forward()`) as a reply. A person chooses an action and claims no
    observation, so the observation is left empty: a wrong action is graded as a wrong action (−1),
    never as a wrong intersection claim. Text starting with `{` is a full reply, kept as given."""
    if text.strip().startswith("{"):
        return text
    return json.dumps({"current observation": "", "current instruction": "", "action": text.strip()})


class VirlTask(Task):
    family = "virl"
    config_type = VirlConfig
    outcome_type = Outcome
    default_seed = 0
    headline = "per_step_accuracy"
    words = ("Arrived", "Did not arrive")
    call_words = ("move", "moves")
    reference_classes = {1.0: "CORRECT_ACTION", -1.0: "INCORRECT_ACTION", -1.5: "INCORRECT_OBS"}

    def key(self, config: VirlConfig) -> str:
        where = f"route{config.route}" if config.route is not None else f"seed{config.seed}"
        return f"{config.source}#{where}/{'abs' if config.absolute_action else 'rel'}"

    def recall_key(self, instance: Instance) -> str:
        """The route walked (its source and id), whatever the heading, seed or action space."""
        info = self.session(instance).describe()
        return f"{info['source']}#{info['route_id']}"

    def session(self, instance: Instance) -> VirlSession:
        return VirlSession(self, instance)

    def instances(self, split: str, n: int | None = None, seed: int | None = None,
                  sources: dict[str, str] | None = None, **overrides) -> list[Instance]:
        """Episode i of a split walks route i mod R with episode seed `seed + i` (random initial
        heading and rail drops from that seed); a split without a paper count (`default_n` None)
        plays each route of its source at most once."""
        s = self.split(split)
        source = (sources or {}).get(s.stream) or DEFAULT_SOURCES[s.stream]
        n_routes = len(route_data(source).routes)
        n = s.default_n if n is None else n
        n = n_routes if n is None else (min(n, n_routes) if s.default_n is None else n)
        base = self.default_seed if seed is None else seed
        return [Instance(self.name, {"source": source, "route": i % n_routes, "seed": base + i, **s.params,
                                     **overrides}) for i in range(n)]

    def training_stream(self, seed: int, **overrides) -> Iterator[Instance]:
        """Episodes on the `id` split's route set and action space, each with its own episode
        seed (from `TRAINING_SEED_BASE`, drawn from `seed`); the route is drawn from the episode
        seed, so instances that share a seed share route, heading and rail."""
        split = self.split("id")
        rng = random.Random(f"virl-rl:{seed}")
        params = {"source": DEFAULT_SOURCES[split.stream], **split.params, **overrides}
        while True:
            yield Instance(self.name, {**params, "seed": TRAINING_SEED_BASE + rng.randrange(10 ** 9)})

    def stream_matches(self, split: Split, choice: dict) -> bool:
        """A split walks its stream's route set (`choice["source"]`, else the in-distribution one)."""
        return DEFAULT_SOURCES[split.stream] == choice.get("source", DEFAULT_SOURCES["id"])

    def person_reply(self, session: VirlSession, text: str) -> str:
        return action_reply(text)

    def step_fields(self, parsed: dict) -> list[tuple[str, Any]]:
        return [("action", parsed.get("action")), ("expected", parsed.get("gt_action"))]


_ID = Split("id", "absolute (compass) actions", "id", 48, {"absolute_action": True})
_RULE_OOD = Split("rule-ood", "relative (left/right) actions, same episodes as id", "id", 48,
                  {"absolute_action": False})


class VirlLanguage(VirlTask):
    name, vision, label = "virl-l", False, "V-IRL navigation, text (V-IRL-L)"
    splits = (_ID, _RULE_OOD, Split("streets", "held-out streets, absolute actions, one episode per route", "ood",
                                    None, {"absolute_action": True}))
    findings = FindingsWords(
        short="V-IRL-L",
        split_labels={"id": "absolute actions (ID)", "rule-ood": "relative actions (rule-OOD)",
                      "streets": "held-out streets"},
        ood="relative actions", instances="episodes",
        stage_notes={**COMMON_STAGE_NOTES,
                     "base": "the stand-in for pretraining: walks 96 synthetic towns under both action spaces "
                             "(never a Helsinki route or name)",
                     "sft": "continued SFT on ID expert actions (Helsinki routes, compass actions)",
                     "sft-diverse": "SFT from Init on ID actions mixed with other-city walks under both action "
                                    "spaces (after the rebuttal, arXiv 2510.00237)"},
        intro="The paper post-trains one pretrained model two ways: SFT imitates expert actions, RL learns from "
              "the environment's own verdicts. Both train on navigation with absolute actions only (turn to "
              "face north, east, ...). The test is a rule neither has seen: the same routes with relative "
              "actions instead of compass actions (turn left, turn right). The score is per-step accuracy: the "
              "share of the model's actions that were correct.",
        base_line="Our stand-in for a pretrained model, a tiny model trained from scratch on walks through 96 "
                  "synthetic towns (every street and place named afresh) under both action spaces, never on a "
                  "Helsinki route: {id} with compass actions, {ood} with relative actions on the Helsinki routes.",
        split_line="With compass actions / with relative actions: ",
        diverse_line="The rebuttal: SFT on ID actions mixed with other-city walks under both action spaces "
                     "(SFT-diverse) vs plain SFT with relative actions: {diff} ± {se}. Whether SFT forgets "
                     "depends on what it is trained on.",
        more_ood={"streets": "held-out streets"})
    paper = ({"metric": "per-step accuracy", "split": "rule-ood", "source": "paper §5.1, Fig. 6",
              "values": {"init": 0.808, "sft": 0.013, "rl": 0.918}},)


class VirlVision(VirlTask):
    name, vision, label = "virl-vl", True, "V-IRL navigation, street views (V-IRL-VL)"
    splits = (_ID, _RULE_OOD, Split("visual-ood", "held-out routes (VLN_mini when given), the paper's 18",
                                    "ood", 18, {"absolute_action": True}))
    findings = FindingsWords(
        short="V-IRL-VL",
        split_labels={"id": "absolute actions (ID)", "rule-ood": "relative actions (rule-OOD)",
                      "visual-ood": "held-out routes (visual-OOD)"},
        ood="relative actions", instances="episodes",
        stage_notes={"init": "the V-IRL-L Init given a vision encoder, then a short SFT on ID street-view "
                             "grids (absolute actions)",
                     "sft": "continued SFT on ID expert actions from the 2×2 street-view grid",
                     "rl": "GRPO on ID routes from Init, from the street-view grid, with the verifier's feedback"},
        intro="V-IRL-VL is navigation from pictures: at every step the model sees a 2×2 grid of street views and "
              "must find the landmarks itself. Both post-trainings walk with compass actions only. The tests: the "
              "same routes with relative actions (turn left / right), and routes it never walked. The score is "
              "per-step accuracy: the share of its actions that were correct.",
        base_line="", split_line="With compass actions / with relative actions: ",
        diverse_line="",
        produce="vision",
        more_ood={"visual-ood": "held-out routes"})
    # V-IRL-VL's visual-OOD (VLN mini) is episode success, not the per-step accuracy the bars show: words only
    paper = ({"metric": "per-step accuracy", "split": "rule-ood", "source": "paper §5.1, Fig. 6",
              "values": {"init": 0.357, "sft": 0.025, "rl": 0.450}},)
    paper_words = ("On held-out routes (the VLN mini benchmark, 18 routes) the paper reports episode success "
                   "Init 16.7 %, SFT 11.1 %, RL 77.8 %.")
