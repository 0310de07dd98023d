"""The trainer adapters' only door to the games: instances, episodes, replies, splits.

Everything `models.adapters.trl` and `models.adapters.verl` need from the engines goes through
this module, so that moving onto the task registry (`game.tasks`) changes this file only:

- `Instance`: one seeded task instance as plain JSON (task + parameters), the thing a dataset row
  carries (TRL: a column; verl: `extra_info.interaction_kwargs`);
- `open_episode(instance) -> Episode`: prompt, image, `step(text)`, budget, return, success —
  graded by the exact engines (`game.gp.episode`, `game.virl.episode`), prompts from
  `models.prompts` (byte-exact paper templates);
- `gp_reply` / `virl_reply`: tool arguments → the paper's reply text (`ResponseEqn` /
  `ResponseVIRL`), so a tool call is graded by the same verifier as a raw reply;
- `instances(task, split, n)`: the paper's instance streams per split (GP: the seed-42 evaluation
  hand lists; V-IRL: route i mod R with episode seed i) plus a disjoint training stream.

Budgets follow the paper: 5 graded tries per GP hand, 2 per V-IRL position. The reference then
makes one more call whose text it ignores (GP −1 `step_limit_reached`, V-IRL −1 `Exceed maximum
verify steps`, `truncated`); a trainer must not spend a generation on it, so `Episode.step`
makes that call itself once the graded budget is spent (`auto_close`). The step records are then
exactly those of the Gymnasium env driven with one extra (ignored) reply.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from game.tasks import TASKS as REGISTRY
from game.tasks import get_task

TASKS = tuple(REGISTRY)
FAMILIES = {name: task.family for name, task in REGISTRY.items()}
VERIFY_ITER = {"gp": 5, "virl": 2}          # the paper's graded tries (GP: per hand; V-IRL: per position)
REWARD_MODES = ("return", "final", "success")

# split -> deal-stream name in game.gp.deal.EVAL_CONFIGS, per modality (the paper's configs)
GP_SPLITS = {
    "gp-l": {"id": "language_id", "ood": "language_rule_ood"},
    "gp-vl": {"id": "vl_id_black", "ood": "vl_rule_ood_black", "visual-ood": "vl_visual_ood_red"},
}
GP_TRAIN_SEED = 1_000_000                   # training hands: another stream than the seed-42 lists
# split -> (route source, absolute actions); evaluation episode i walks route i mod R with seed i
VIRL_SPLITS = {"id": ("bundled:helsinki", True), "ood": ("bundled:helsinki", False),
               "streets": ("bundled:helsinki-ood", True)}
VIRL_TRAIN_SEED_BASE = 1_000_000            # training episode seeds (evaluation uses seeds < 10,000)
MAX_TEXT = 65_536                           # longest reply or tool argument we grade


class InstanceError(ValueError):
    """A malformed instance (the message says what is wrong)."""


def family(task: str) -> str:
    if task not in FAMILIES:
        raise InstanceError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return FAMILIES[task]


def splits(task: str) -> tuple[str, ...]:
    """The splits `instances` knows for a task (`train` first)."""
    names = GP_SPLITS[task] if family(task) == "gp" else VIRL_SPLITS
    return ("train", *names)


# ------------------------------------------------------------------------------ instances

@dataclass(frozen=True)
class Instance:
    """One task instance: `task` and JSON parameters.

    GP: `deal_id` (`HKC5D2C4`, `-30` suffix for another target), `rule` (`face10` | `face_jqk`),
    optional `verify_iter` (5). V-IRL: `source` (`bundled:helsinki`, a release directory or a
    `route_infos.json` file), `route` (index or id), `seed`, optional `absolute_action` (true),
    `heading`, `verify_iter` (2), `drop_rate`, `relocation`, `straight_line_length`, `rng_mode`.
    `split` and `index` are bookkeeping only."""

    task: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        family(self.task)
        if not isinstance(self.params, dict):
            raise InstanceError("instance parameters must be a mapping")

    @property
    def family(self) -> str:
        return FAMILIES[self.task]

    @property
    def vision(self) -> bool:
        return get_task(self.task).vision

    def to_dict(self) -> dict:
        """Flat JSON: `{"task": ..., **params}` (a TRL column value, verl interaction kwargs)."""
        return {"task": self.task, **self.params}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def parse(cls, value: "Instance | dict | str", task: str | None = None) -> "Instance":
        """From an `Instance`, a flat dict or its JSON text (JSON only: nothing is evaluated)."""
        if isinstance(value, Instance):
            return value
        if isinstance(value, (str, bytes)):
            if len(value) > MAX_TEXT:
                raise InstanceError("instance text too long")
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise InstanceError(f"instance is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InstanceError(f"an instance is a mapping with a 'task', got {type(value).__name__}")
        data = dict(value)
        name = data.pop("task", None) or task
        if name is None:
            raise InstanceError("an instance needs a 'task'")
        if task is not None and name != task:
            raise InstanceError(f"instance is for task {name!r}, expected {task!r}")
        return cls(str(name), data)


def instances(task: str, split: str, n: int, *, offset: int = 0) -> list[Instance]:
    """Instances `offset .. offset+n-1` of a split's stream.

    GP `id`/`ood`/`visual-ood`: the paper's evaluation hand lists (seed 42; the first 234 are the
    paper's episodes), J/Q/K = 10 for `id`/`visual-ood` and 11/12/13 for `ood`. GP `train`: ID
    hands from another seed. V-IRL `id`/`ood`/`streets`: episode i walks route i mod R with seed
    i (`ood` = the same walks with relative actions). V-IRL `train`: seeds from 1,000,000 with the
    route drawn by the seed, absolute actions."""
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be non-negative")
    if split not in splits(task):
        raise InstanceError(f"unknown split {split!r} for {task}; use one of {', '.join(splits(task))}")
    if family(task) == "gp":
        return _gp_instances(task, split, n, offset)
    return _virl_instances(task, split, n, offset)


def _gp_instances(task: str, split: str, n: int, offset: int) -> list[Instance]:
    from game.gp.deal import EVAL_CONFIGS, PAPER_SEED, DealConfig, Dealer, evaluation_hands

    if split == "train":
        config = DealConfig(suits=get_task(task).suits)
        dealer = Dealer(GP_TRAIN_SEED, config)
        hands = dealer.take(offset + n)[offset:]
        rule = config.rule
    else:
        name = GP_SPLITS[task][split]
        hands = evaluation_hands(name, offset + n, PAPER_SEED)[offset:]
        rule = EVAL_CONFIGS[name].rule
    return [Instance(task, {"deal_id": h.id, "rule": rule.value, "split": split, "index": offset + i})
            for i, h in enumerate(hands)]


def _virl_instances(task: str, split: str, n: int, offset: int) -> list[Instance]:
    out = []
    if split == "train":
        for i in range(offset, offset + n):
            out.append(Instance(task, {"source": VIRL_SPLITS["id"][0], "seed": VIRL_TRAIN_SEED_BASE + i,
                                       "absolute_action": True, "split": split, "index": i}))
        return out
    source, absolute = VIRL_SPLITS[split]
    n_routes = len(virl_data(source).routes)
    for i in range(offset, offset + n):
        out.append(Instance(task, {"source": source, "route": i % n_routes, "seed": i,
                                   "absolute_action": absolute, "split": split, "index": i}))
    return out


@lru_cache(maxsize=8)
def virl_data(source: str):
    """Routes (and panoramas) of a source: `bundled:NAME`, a release directory, or a
    `route_infos.json[.gz]` file (exact positions, no panoramas)."""
    from game.virl.datasets import VirlData, open_source
    from game.virl.routes import RouteDataError, load_routes

    try:
        path = Path(source)
        if not source.startswith("bundled:") and path.is_file():
            return VirlData(str(path), load_routes(path), None, description="route_infos file")
        return open_source(source)
    except (RouteDataError, OSError, ValueError) as exc:
        raise InstanceError(f"cannot open V-IRL source {source!r}: {exc}") from None


# ------------------------------------------------------------------------------ replies

def _cell(value: Any) -> str:
    return str(value).strip() if value is not None else "None"


def gp_reply(cards: Sequence[Any] | Any, number: Sequence[Any] | Any, formula: Any) -> str:
    """The paper's GP reply (`ResponseEqn` layout) for tool arguments, written as given
    (no `=24` is appended: the verifier cuts the formula at `=` anyway)."""
    from models.prompts import cards_repr

    cards_list = [_cell(c) for c in cards] if isinstance(cards, (list, tuple)) else [_cell(cards)]
    nums = number if isinstance(number, (list, tuple)) else [number]
    return ("\n{\n"
            f"  \"cards\": {cards_repr(cards_list)},\n"
            f"  \"number\": [{', '.join(_cell(x) for x in nums)}],\n"
            f"  \"formula\": \"{_cell(formula)}\",\n"
            "}")


def virl_reply(current_observation: Any, current_instruction: Any, action: Any) -> str:
    """The paper's V-IRL reply (`ResponseVIRL`) for tool arguments."""
    from models.prompts import response_virl

    return response_virl(_cell(current_observation), _cell(current_instruction), _cell(action))


def bounded_text(text: Any) -> str:
    text = "" if text is None else str(text)
    if len(text) > MAX_TEXT:
        raise InstanceError(f"reply longer than {MAX_TEXT} characters")
    return text


# ------------------------------------------------------------------------------ episodes

@dataclass(frozen=True)
class Step:
    """One engine call as every driver must see it."""
    call: int
    reward: float
    feedback: str            # the engine's Verify Info, verbatim
    terminated: bool
    truncated: bool
    graded: bool             # False for the budget-exhausted call (its text is ignored)

    def to_dict(self) -> dict:
        return {"call": self.call, "reward": self.reward, "feedback": self.feedback,
                "terminated": self.terminated, "truncated": self.truncated, "graded": self.graded}


class EpisodeOver(RuntimeError):
    """A reply was sent after the episode ended."""


class Episode:
    """One episode of a task behind one interface (the registry's `session` shape)."""

    def __init__(self, instance: Instance, *, auto_close: bool = True) -> None:
        self.instance = instance
        self.auto_close = auto_close
        self.steps: list[Step] = []
        self._image_cache: tuple[int, Any] | None = None
        p = instance.params
        try:
            if instance.family == "gp":
                self._open_gp(p)
            else:
                self._open_virl(p)
        except InstanceError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InstanceError(f"bad {instance.task} instance: {exc}") from None

    def _open_gp(self, p: dict) -> None:
        from game.gp.cards import Rule
        from game.gp.deal import Deal
        from game.gp.episode import Episode as GPEpisode

        verify_iter = int(p.get("verify_iter", VERIFY_ITER["gp"]))
        if not 1 <= verify_iter <= 20:
            raise InstanceError("verify_iter must be between 1 and 20")
        self._ep = GPEpisode(Deal.from_id(str(p.get("deal_id", ""))), Rule.parse(p.get("rule", "face10")),
                             language_only=not self.instance.vision, verify_iter=verify_iter)

    def _open_virl(self, p: dict) -> None:
        from game.virl.episode import start_episode

        self.data = virl_data(str(p.get("source") or VIRL_SPLITS["id"][0]))
        if self.instance.vision and not self.data.has_images:
            raise InstanceError(f"{self.data.name}: no street views or map features for the VL task")
        route = p.get("route")
        idx = None if route is None else self.data.route(route).index
        verify_iter = int(p.get("verify_iter", VERIFY_ITER["virl"]))
        if not 1 <= verify_iter <= 10:
            raise InstanceError("verify_iter must be between 1 and 10")
        heading = p.get("heading")
        kw = {k: p[k] for k in ("drop_rate", "straight_line_length", "relocation", "rng_mode") if k in p}
        self._ep = start_episode(self.data.routes, seed=int(p.get("seed", 0)), route_idx=idx,
                                 heading=None if heading is None else int(heading),
                                 absolute_action=bool(p.get("absolute_action", True)),
                                 mapping=self.data.mapping, verify_iter=verify_iter,
                                 language_only=not self.instance.vision, **kw)

    # ---- what the model sees ---------------------------------------------------------
    @property
    def task(self) -> str:
        return self.instance.task

    @property
    def vision(self) -> bool:
        return self.instance.vision

    def prompt(self) -> str:
        """The paper's prompt for the current state (V-IRL: the current position)."""
        from models.prompts import gp_prompt, virl_prompt

        ep = self._ep
        if self.instance.family == "gp":
            return gp_prompt(ep.deal.labels, ep.rule, ep.target, vision=self.vision)
        return virl_prompt(ep.instruction_text, ep.obs_act_seq(), ep.action_space_text, vision=self.vision)

    def image(self):
        """The VL observation (PIL image) for the current state; None for the L tasks."""
        if not self.vision:
            return None
        key = 0 if self.instance.family == "gp" else self._ep.index
        if self._image_cache is None or self._image_cache[0] != key:
            from PIL import Image

            if self.instance.family == "gp":
                from game.gp.render import table_image

                img = table_image(self._ep.deal.cards)
            else:
                from game.virl.render import street_view_grid

                pano, rotation = self.data.panorama(self._ep.entry)
                img = Image.fromarray(street_view_grid(pano, self._ep.entry.heading, rotation=rotation))
            self._image_cache = (key, img)
        return self._image_cache[1]

    # ---- stepping ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._ep.done

    @property
    def success(self) -> bool:
        return bool(self._ep.success)

    @property
    def budget_spent(self) -> bool:
        """The graded tries of the current hand / position are used up (the next call is the
        reference's ignored one)."""
        return not self.done and self._ep.remaining == 0

    def _record(self, rec) -> Step:
        step = Step(rec.call, float(rec.reward), rec.verify_info, bool(rec.terminated), bool(rec.truncated),
                    bool(rec.graded))
        self.steps.append(step)
        return step

    def step(self, text: Any) -> list[Step]:
        """Grade one reply; returns the engine calls it caused (two when it spent the last graded
        try and `auto_close` makes the reference's ignored call)."""
        if self.done:
            raise EpisodeOver("the episode is over (solved or out of tries); start a new one")
        made = [self._record(self._ep.step(bounded_text(text)))]
        if self.auto_close and self.budget_spent:
            made.append(self._record(self._ep.step("")))
        return made

    def verdict_only(self, text: Any) -> tuple[float, str]:
        """(reward, Verify Info) one reply would get now, without stepping."""
        text = bounded_text(text)
        ep = self._ep
        if self.instance.family == "gp":
            from game.gp.verifier import verify

            v = verify(text, ep.numbers, ep.deal.labels, target=ep.target, language_only=ep.language_only)
        else:
            from game.virl.verifier import verify

            v = verify(text, ep.entry.gt_action, ep.entry.observation)
        return float(v.reward), v.verify_info

    def grade_only(self, text: Any) -> float:
        """The reward one reply would get now, without stepping (single-turn scoring)."""
        return self.verdict_only(text)[0]

    @property
    def episode_return(self) -> float:
        return float(sum(s.reward for s in self.steps))

    def reward(self, mode: str = "return") -> float:
        """`return`: the sum of the step rewards (the paper's RL return with gamma 1);
        `final`: the last step's reward; `success`: 1.0 if the episode succeeded else 0.0."""
        if mode == "return":
            return self.episode_return
        if mode == "final":
            return self.steps[-1].reward if self.steps else 0.0
        if mode == "success":
            return 1.0 if self.success else 0.0
        raise ValueError(f"unknown reward mode {mode!r}; use one of {', '.join(REWARD_MODES)}")

    def message_after(self, made: Sequence[Step]) -> str:
        """What the model reads after a reply: the paper's `You failed this trial because …`
        turn after a failed try; after a V-IRL move, the prompt for the new position (the
        paper's fresh chat); at the end, the last Verify Info."""
        from models.prompts import feedback_text

        last = made[-1]
        if self.done:
            return last.feedback if last.terminated and last.graded and last.reward > 0 else feedback_text(last.feedback)
        if self.moved(made):            # a correct V-IRL move: the next position's prompt
            return self.prompt()
        return feedback_text(last.feedback)

    def moved(self, made: Sequence[Step]) -> bool:
        """Whether these calls took a correct V-IRL move (the observation changed)."""
        return self.instance.family == "virl" and bool(made) and made[-1].graded and made[-1].reward > 0

    @property
    def max_calls(self) -> int:
        """The most engine calls an episode can take (bounds a trainer's turn limit)."""
        return self.max_graded + 1

    @property
    def max_graded(self) -> int:
        """The most graded replies (model generations) an episode can take."""
        if self.instance.family == "gp":
            return self._ep.verify_iter
        return len(self._ep.rail.entries) * self._ep.verify_iter

    def describe(self) -> dict:
        ep = self._ep
        if self.instance.family == "gp":
            return {"deal_id": ep.deal.id, "cards": ep.deal.labels, "numbers": ep.numbers,
                    "target": ep.target, "rule": ep.rule.value}
        return {"route_id": ep.rail.route.route_id, "rail_length": len(ep.rail.entries),
                "gt_actions": ep.rail.gt_actions}


def open_episode(instance: "Instance | dict | str", *, task: str | None = None, auto_close: bool = True) -> Episode:
    """A fresh episode for an instance (an `Instance`, a flat dict or its JSON)."""
    return Episode(Instance.parse(instance, task), auto_close=auto_close)


def text_of(content: Any) -> str:
    """The text of a chat message's content (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


__all__ = ["TASKS", "FAMILIES", "VERIFY_ITER", "REWARD_MODES", "Instance", "InstanceError", "Episode",
           "EpisodeOver", "Step", "instances", "open_episode", "gp_reply", "virl_reply", "splits", "family",
           "text_of", "virl_data"]
