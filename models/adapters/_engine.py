"""The trainer adapters' thin layer over the task protocol: what TRL and verl need on top of a
registry session, and nothing task-specific.

Everything that differs between tasks — typed configs, splits and instance streams, prompts,
images, grading, budgets, route sets — is asked of the registry (`game.tasks`) and the evaluation
protocol (`game.protocol`). This module adds only the trainer-side pieces:

- `parse_instance(value)` / `instance_json(instance)`: a `game.tasks.Instance` from what a dataset
  row carries (TRL: the `instance` column; verl: `extra_info.interaction_kwargs` and
  `reward_model.ground_truth`): the registry's JSON form `{"task", "params"}`, the flat form
  `{"task", **params}`, or their JSON text (JSON only: nothing is evaluated);
- `splits(task)` / `instances(task, split, n, offset=)`: `train` (the registry's training stream,
  `Task.training_instances`, the same stream the tiny GRPO trainer plays) plus exactly the
  protocol's evaluation splits and instance lists (gp-l: id, rule-ood; gp-vl: id, rule-ood,
  visual-ood; virl-l: id, rule-ood, streets; virl-vl: id, rule-ood, visual-ood);
- `open_episode(instance) -> Episode`: a registry session that makes the reference's ignored
  budget-exhausted call itself, tells what the model reads next, and scores the rollout;
- `gp_reply` / `virl_reply`: tool arguments → the paper's reply text (`ResponseEqn` /
  `ResponseVIRL`), so a tool call is graded by the same verifier as a raw reply.

Budgets are the registry's (the paper's 5 graded tries per GP hand, 2 per V-IRL position). The
reference then makes one more call whose text it ignores (GP −1 `step_limit_reached`, V-IRL −1
`Exceed maximum verify steps`, `truncated`); a trainer must not spend a generation on it, so
`Episode.step` makes that call itself once the graded budget is spent (`auto_close`). The step
records (`game.tasks.StepResult`) are then exactly those of the Gymnasium env driven with one
extra (ignored) reply.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Iterable, Sequence

from game import protocol
from game.prompts import cards_repr, feedback_text, response_virl
from game.tasks import TASKS as REGISTRY
from game.tasks import Instance, InstanceError, StepResult, get_task, open_session

TASKS = tuple(REGISTRY)
TRAIN = "train"                             # the training split (not an evaluation split)
REWARD_MODES = ("return", "final", "success")
MAX_TEXT = 65_536                           # longest reply, tool argument or instance text we accept


def splits(task: str) -> tuple[str, ...]:
    """`train` and the protocol's evaluation splits of a task."""
    return (TRAIN, *protocol.splits(task))


# ------------------------------------------------------------------------------ instances

def parse_instance(value: "Instance | dict | str | bytes", task: str | None = None) -> Instance:
    """A registry `Instance` from an `Instance`, a mapping (`{"task", "params"}` or flat
    `{"task", **params}`) or its JSON text; `task` fills in or checks the task."""
    if isinstance(value, Instance):
        data: Any = value.to_dict()
    elif isinstance(value, (str, bytes)):
        if len(value) > MAX_TEXT:
            raise InstanceError("instance text too long")
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise InstanceError(f"instance is not valid JSON: {exc}") from None
    else:
        data = value
    if not isinstance(data, dict):
        raise InstanceError(f"an instance is a mapping with a 'task', got {type(data).__name__}")
    data = dict(data)
    name = data.pop("task", None) or task
    if name is None:
        raise InstanceError("an instance needs a 'task'")
    if task is not None and name != task:
        raise InstanceError(f"instance is for task {name!r}, expected {task!r}")
    params = data["params"] if set(data) == {"params"} and isinstance(data["params"], dict) else data
    return Instance(str(name), params)


def instance_json(instance: Instance) -> str:
    """The instance as JSON text (`{"task", "params"}`, the registry's form)."""
    return json.dumps(instance.to_dict(), sort_keys=True)


def instances(task: str, split: str, n: int, *, offset: int = 0) -> list[Instance]:
    """Instances `offset .. offset + n - 1` of a split: `train` is the registry's training stream;
    the evaluation splits are the protocol's lists (GP: the seed-42 hand lists, the first 234 the
    paper's episodes; V-IRL: episode i walks route i mod R with seed i; `streets` plays each
    held-out route once, so it has as many instances as routes)."""
    if n < 0 or offset < 0:
        raise InstanceError("n and offset must be non-negative")
    if split not in splits(task):
        raise InstanceError(f"unknown split {split!r} for {task}; use one of {', '.join(splits(task))}")
    if split == TRAIN:
        return get_task(task).training_instances(n, offset=offset)
    return protocol.instances(task, split, offset + n)[offset:] if n else []


# ------------------------------------------------------------------------------ replies

def _cell(value: Any) -> str:
    return str(value).strip() if value is not None else "None"


def gp_reply(cards: Sequence[Any] | Any, number: Sequence[Any] | Any, formula: Any) -> str:
    """The paper's GP reply (`ResponseEqn` layout) for tool arguments, written as given (no
    `=24` is appended, numbers are not coerced: the verifier judges what the model wrote)."""
    cards_list = [_cell(c) for c in cards] if isinstance(cards, (list, tuple)) else [_cell(cards)]
    nums = number if isinstance(number, (list, tuple)) else [number]
    return ("\n{\n"
            f"  \"cards\": {cards_repr(cards_list)},\n"
            f"  \"number\": [{', '.join(_cell(x) for x in nums)}],\n"
            f"  \"formula\": \"{_cell(formula)}\",\n"
            "}")


def virl_reply(current_observation: Any, current_instruction: Any, action: Any) -> str:
    """The paper's V-IRL reply (`ResponseVIRL`) for tool arguments."""
    return response_virl(_cell(current_observation), _cell(current_instruction), _cell(action))


def bounded_text(text: Any) -> str:
    text = "" if text is None else str(text)
    if len(text) > MAX_TEXT:
        raise InstanceError(f"reply longer than {MAX_TEXT} characters")
    return text


def step_dict(step: StepResult) -> dict:
    """A step record as JSON (the registry's names: call, reward, feedback, outcome, graded, ...)."""
    return asdict(step)


# ------------------------------------------------------------------------------ episodes

class EpisodeOver(RuntimeError):
    """A reply was sent after the episode ended."""


class Episode:
    """One episode of a task: a registry session (`session`) plus what a trainer needs."""

    def __init__(self, instance: Instance, *, auto_close: bool = True) -> None:
        self.instance = instance
        self.auto_close = auto_close
        self.moved = False          # the last reply moved the agent on (V-IRL: a correct move)
        try:
            self.session = open_session(instance)
        except InstanceError:
            raise
        except (ValueError, TypeError, LookupError, OSError) as exc:
            raise InstanceError(f"bad {instance.task} instance: {exc}") from None

    # ---- what the model sees ---------------------------------------------------------
    def prompt(self) -> str:
        """The paper's prompt for the current state (V-IRL: the current position)."""
        return self.session.prompt()

    def image(self):
        """The VL observation (PIL image) for the current state; None for the L tasks."""
        return self.session.image()

    # ---- stepping ----------------------------------------------------------------------
    @property
    def steps(self) -> list[StepResult]:
        """The engine calls so far (the registry's step records)."""
        return self.session.results

    @property
    def done(self) -> bool:
        return self.session.done

    @property
    def success(self) -> bool:
        return bool(self.session.success)

    def step(self, text: Any) -> list[StepResult]:
        """Grade one reply; returns the engine calls it caused (two when it spent the last graded
        try and `auto_close` makes the reference's ignored call)."""
        if self.done:
            raise EpisodeOver("the episode is over (solved or out of tries); start a new one")
        text = bounded_text(text)
        before = self.session.prompt()
        made = [self.session.step(text)]
        if self.auto_close and not self.done and not self.session.graded_next:
            made.append(self.session.step(""))      # the budget is spent: the reference's ignored call
        self.moved = not self.done and self.session.prompt() != before
        return made

    def verdict(self, text: Any) -> tuple[float, str]:
        """(reward, Verify Info) one reply would get now, without stepping."""
        v = self.session.verdict(bounded_text(text))
        return float(v.reward), v.verify_info

    def grade_only(self, text: Any) -> float:
        """The reward one reply would get now, without stepping (single-turn scoring)."""
        return self.verdict(text)[0]

    def reward(self, mode: str = "return") -> float:
        """`return`: the sum of the step rewards (the paper's RL return with gamma 1);
        `final`: the last step's reward; `success`: 1.0 if the episode succeeded else 0.0."""
        if mode == "return":
            return float(sum(s.reward for s in self.steps))
        if mode == "final":
            return float(self.steps[-1].reward) if self.steps else 0.0
        if mode == "success":
            return 1.0 if self.success else 0.0
        raise ValueError(f"unknown reward mode {mode!r}; use one of {', '.join(REWARD_MODES)}")

    def message_after(self, made: Sequence[StepResult]) -> str:
        """What the model reads after a reply: the paper's `You failed this trial because …`
        turn after a failed try; after a move to a new position (V-IRL), that position's prompt
        (the paper's fresh chat); at the end, the last Verify Info."""
        last = made[-1]
        if self.done:
            solved = last.terminated and last.graded and last.reward > 0
            return last.feedback if solved else feedback_text(last.feedback)
        return self.prompt() if self.moved else feedback_text(last.feedback)


def open_episode(instance: "Instance | dict | str", *, task: str | None = None, auto_close: bool = True) -> Episode:
    """A fresh episode for an instance (an `Instance`, a mapping or its JSON)."""
    return Episode(parse_instance(instance, task), auto_close=auto_close)


def text_of(content: Any) -> str:
    """The text of a chat message's content (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


__all__ = ["TASKS", "TRAIN", "REWARD_MODES", "Instance", "InstanceError", "Episode", "EpisodeOver", "gp_reply",
           "instance_json", "instances", "open_episode", "parse_instance", "splits", "step_dict", "text_of",
           "virl_reply"]
