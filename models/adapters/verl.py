"""verl adapter: multi-turn `Interaction` classes for GeneralPoints and V-IRL, and a single-turn
`compute_score`. verl is not imported here: the classes are duck-typed to its `BaseInteraction`
(verl 0.9) and loaded by dotted path from an interaction YAML (`interaction_config.yaml` beside
this file), as verl's interaction registry does.

verl's contract: one interaction object serves many rollouts at once, keyed by `instance_id`;
`start_interaction(instance_id, **interaction_kwargs)` with the row's
`extra_info.interaction_kwargs`; after every assistant turn `generate_response(instance_id,
messages)` returns `(should_terminate, text, turn_score, metadata)` and `text` is appended as the
next *user* turn — the paper's `You failed this trial because <Verify Info>` protocol;
`calculate_score(instance_id)` and `finalize_interaction(instance_id)` close the rollout.

- `GeneralPointsInteraction` (gp-l, gp-vl) and `VirlInteraction` (virl-l, virl-vl): the last
  assistant message is graded as a raw reply by our exact verifier. Budgets are the paper's (5
  graded tries per hand; 2 per V-IRL position); when a budget runs out the reference's ignored
  extra call is made without a generation and the interaction asks verl to stop. The turn score
  is the sum of the rewards of the engine calls that turn made; `calculate_score` is the episode
  reward (`config.reward`: `return` (default), `final` or `success`). `metadata` carries the step
  records.
- `max_user_turns` (in the trainer config, `actor_rollout_ref.rollout.multi_turn.max_user_turns`)
  only has to be large enough never to cut an episode short: 5 for GP (the paper's 5 tries) and
  `2 × longest rail` for V-IRL (2 tries per position), as `dataset.max_user_turns` computes.
- `compute_score(data_source, solution_str, ground_truth, extra_info)`: the single-turn reward,
  grading one reply against the instance in `ground_truth` (JSON text, never evaluated as code).
"""
from __future__ import annotations

from typing import Any
from uuid import uuid4

from game.tasks import get_task

from ._engine import REWARD_MODES, Episode, Instance, InstanceError, open_episode, parse_instance, step_dict, text_of

MAX_LIVE = 65_536          # rollouts one interaction object holds at once (bounded memory)


def _last_assistant_text(messages: Any) -> str:
    for message in reversed(list(messages or [])):
        if isinstance(message, dict) and message.get("role") == "assistant":
            return text_of(message.get("content"))
    return ""


class _Interaction:
    _family = ""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.name: str = self.config.get("name", f"sftvsrl-{self._family}")
        self.reward_mode = self.config.get("reward", "return")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward mode {self.reward_mode!r}; use one of {', '.join(REWARD_MODES)}")
        self.default_task = self.config.get("task")
        self.verify_iter = self.config.get("verify_iter")      # default budget for rows without one
        self._episodes: dict[str, Episode] = {}

    def _instance(self, kwargs: dict) -> Instance:
        fields = {k: v for k, v in kwargs.items() if k not in ("name", "agent_data")}
        if "instance" in fields:
            inst = parse_instance(fields["instance"])
        else:
            inst = parse_instance(fields, None if "task" in fields else self.default_task)
        if self.verify_iter is not None and "verify_iter" not in inst.params:
            inst = Instance(inst.task, {**inst.params, "verify_iter": int(self.verify_iter)})
        if get_task(inst.task).family != self._family:
            raise InstanceError(f"{inst.task} instance given to the {self.name} interaction")
        return inst

    def _episode(self, instance_id: str) -> Episode:
        try:
            return self._episodes[instance_id]
        except KeyError:
            raise KeyError(f"unknown interaction instance {instance_id!r} (start_interaction first)") from None

    async def start_interaction(self, instance_id: str | None = None, **kwargs: Any) -> str:
        """Open the episode described by the row's `interaction_kwargs`; returns the instance id."""
        if instance_id is None:
            instance_id = uuid4().hex
        if instance_id not in self._episodes and len(self._episodes) >= MAX_LIVE:
            raise RuntimeError(f"more than {MAX_LIVE} live rollouts: finalize_interaction is not being called")
        self._episodes[instance_id] = open_episode(self._instance(kwargs))
        return instance_id

    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        """Grade the last assistant message; the text is the next user turn."""
        ep = self._episode(instance_id)
        if ep.done:
            return True, "", 0.0, {"steps": [], "done": True, "success": ep.success}
        made = ep.step(_last_assistant_text(messages))
        text = ep.message_after(made)
        meta = {"steps": [step_dict(s) for s in made], "done": ep.done, "success": ep.success}
        return ep.done, text, float(sum(s.reward for s in made)), meta

    async def calculate_score(self, instance_id: str, **kwargs: Any) -> float:
        """The episode reward so far (`config.reward`)."""
        return self._episode(instance_id).reward(self.reward_mode)

    async def finalize_interaction(self, instance_id: str, **kwargs: Any) -> None:
        """Release the rollout's episode."""
        self._episodes.pop(instance_id, None)

    def prompt(self, instance_id: str) -> str:
        """The paper's prompt for the rollout's current state (for custom agent loops)."""
        return self._episode(instance_id).prompt()


class GeneralPointsInteraction(_Interaction):
    """GeneralPoints (GP-L / GP-VL): up to 5 graded replies per hand with the verifier's feedback."""

    _family = "gp"


class VirlInteraction(_Interaction):
    """V-IRL (V-IRL-L / V-IRL-VL): one reply per move, 2 graded tries per position; after a
    correct move the user turn is the prompt for the new position (the paper's fresh chat)."""

    _family = "virl"


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """verl single-turn reward (`custom_reward_function.path` = this file, `name` =
    `compute_score`): `solution_str` graded as one reply to the instance in `ground_truth`
    (the JSON written by `dataset.verl_rows`) or `extra_info['interaction_kwargs']`."""
    source = ground_truth
    if not source and extra_info:
        source = dict(extra_info.get("interaction_kwargs") or {})
        source.pop("name", None)
    inst = parse_instance(source)
    expected = str(data_source or "")
    if expected.startswith("sftvsrl/") and expected.split("/", 1)[1] != inst.task:
        raise InstanceError(f"data_source {expected!r} does not match the instance's task {inst.task!r}")
    return open_episode(inst).grade_only(solution_str)


__all__ = ["GeneralPointsInteraction", "VirlInteraction", "compute_score"]
