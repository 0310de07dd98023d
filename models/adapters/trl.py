"""TRL adapter: GeneralPoints and V-IRL as `GRPOTrainer(environment_factory=...)` environments,
plus a single-turn reward function. TRL is not imported here (duck-typed to its interface).

TRL's contract (trl 1.16): the factory is called with no arguments and instances are pooled and
reused; `reset(**dataset_row)` starts an episode and returns the text appended to the prompt;
every public method is a tool (typed arguments, Google-style docstring, schema by
`transformers.utils.get_json_schema`); `get_reward()` scores the finished rollout. Tool results go
back to the model as `tool` messages and are masked from the loss.

- `GeneralPointsEnvironment` (gp-l, gp-vl): tool `submit_answer(cards, number, formula)`.
- `VirlEnvironment` (virl-l, virl-vl): tool `take_action(current_observation, current_instruction,
  action)`.

A tool call is written as the paper's reply (`ResponseEqn` / `ResponseVIRL`) and graded by our
exact verifier; the tool returns what the paper's model reads next: `You failed this trial
because <Verify Info>` after a failed try, the next position's prompt after a correct V-IRL move,
and the final Verify Info at the end. Budgets are the paper's (5 tries per hand, 2 per V-IRL
position); the reference's ignored extra call is made without a generation when a budget runs
out. For the VL tasks the table / street-view grid is a dataset `images` column for the first
observation (`dataset.trl_rows`), and each new street-view grid comes back from `take_action` as
an image content block.

Rewards (`reward=`): `"return"` (default; the sum of step rewards, as the paper's return),
`"final"` (the last step's reward) or `"success"` (1/0). A rollout that never calls the tool is
scored as one empty reply would be graded (GP −3 illegal characters, V-IRL −1 or −1.5), so the
scale stays the paper's. Pass options with `functools.partial(GeneralPointsEnvironment,
reward="final")`; route tasks by a dataset `environment` column with `ENVIRONMENTS`.

Single-turn (`GRPOTrainer(reward_funcs=[reply_reward])`): `reply_reward` grades each completion's
text as one reply to the instance's first prompt (the "Debunk the Myth" GP-L setting).
"""
from __future__ import annotations

from typing import Any, Sequence

from game.tasks import get_task

from ._engine import (REWARD_MODES, TASKS, Episode, EpisodeOver, Instance, InstanceError, gp_reply, open_episode,
                      parse_instance, step_dict, text_of, virl_reply)

ROW_COLUMNS = ("prompt", "images", "image", "environment")    # dataset columns that are not instance fields


def _row_instance(family_name: str, instance: Any, task: Any, row: dict) -> Instance:
    """The instance a dataset row describes: its `instance` column (JSON text or a mapping), else
    the row's own keys (`task`, `deal_id`, ...)."""
    if instance is not None:
        inst = parse_instance(instance)
    else:
        inst = parse_instance({k: v for k, v in row.items() if k not in ROW_COLUMNS}, task)
    if get_task(inst.task).family != family_name:
        raise InstanceError(f"{inst.task} instance given to a {family_name} environment")
    return inst


class _Environment:
    """Per-episode state lives in `_episode` and nothing else; `reset` replaces it."""

    _family = ""

    def __init__(self, reward: str = "return") -> None:
        if reward not in REWARD_MODES:
            raise ValueError(f"unknown reward mode {reward!r}; use one of {', '.join(REWARD_MODES)}")
        self._reward_mode = reward
        self._episode: Episode | None = None

    def reset(self, instance: Any = None, task: Any = None, **row: Any) -> str:
        """Start the episode a dataset row describes; returns the paper's prompt for it."""
        self._episode = None
        self._episode = open_episode(_row_instance(self._family, instance, task, row))
        return self._episode.prompt()

    def get_reward(self) -> float:
        """The rollout's reward (see the module docstring)."""
        ep = self._need_episode()
        if not ep.steps:
            return ep.grade_only("")
        return ep.reward(self._reward_mode)

    @property
    def steps(self) -> tuple[dict, ...]:
        """The engine calls of the current episode (a property, so TRL does not expose it as a tool)."""
        return tuple(step_dict(s) for s in self._episode.steps) if self._episode is not None else ()

    def _need_episode(self) -> Episode:
        if self._episode is None:
            raise RuntimeError("call reset() before using the environment")
        return self._episode

    def _play(self, reply: str) -> Any:
        ep = self._need_episode()
        if ep.done:
            raise EpisodeOver("the episode is over; no more answers are graded")
        made = ep.step(reply)
        text = ep.message_after(made)
        if ep.session.vision and ep.moved:                          # moved on: the new street views
            return [{"type": "image", "image": ep.image()}, {"type": "text", "text": text}]
        return text


class GeneralPointsEnvironment(_Environment):
    """GeneralPoints (GP-L / GP-VL) for TRL's `environment_factory`: one hand per episode, up to
    5 graded answers with the verifier's feedback in between (the paper's sequential revision)."""

    _family = "gp"

    def submit_answer(self, cards: list[str], number: list[int], formula: str) -> str:
        """Submit an answer for the current hand of the card game.

        Args:
            cards: The four cards you were dealt, as shown, for example ["K", "5", "10", "A"].
            number: The value of each card under the stated face-card rule, for example [10, 5, 10, 1].
            formula: An equation using each card value exactly once that equals the target, for example "10+10+5-1=24".

        Returns:
            The verdict: "Correct solution." or "You failed this trial because ..." with the reason.
        """
        return self._play(gp_reply(cards, number, formula))


class VirlEnvironment(_Environment):
    """V-IRL navigation (V-IRL-L / V-IRL-VL) for TRL's `environment_factory`: one route per
    episode, one action per position, 2 graded tries per position."""

    _family = "virl"

    def take_action(self, current_observation: str, current_instruction: str, action: str) -> str:
        """Take the next navigation action on the route.

        Args:
            current_observation: The latest observation, for example "No landmark nearby" or "You observe an intersection".
            current_instruction: The instruction sentence being executed now.
            action: One action from the action space, for example "forward()", "turn_direction(north)" or "stop()".

        Returns:
            After a correct move, the prompt for the new position (with a street-view image for the vision task); after a wrong one, "You failed this trial because ..." with the reason; at the end, the final verdict.
        """
        return self._play(virl_reply(current_observation, current_instruction, action))


# task name -> environment class (for a dataset `environment` column), from the registry's families
ENVIRONMENTS = {name: env for name in TASKS for env in (GeneralPointsEnvironment, VirlEnvironment)
                if get_task(name).family == env._family}


def _completion_text(completion: Any) -> str:
    """A completion as TRL passes it: a string, or a list of messages (the last assistant one)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        for message in reversed(list(completion)):
            if isinstance(message, dict) and message.get("role") == "assistant":
                return text_of(message.get("content"))
    return ""


def reply_reward(completions: list, instance: list, **kwargs: Any) -> list[float]:
    """TRL reward function for single-turn training: each completion is graded as one reply to
    its instance's prompt by the paper's verifier (GP: +5 / +1 / −1 / −2·k / −3 …; V-IRL: the
    first position's +1 / −1 / −1.5)."""
    return [open_episode(inst).grade_only(_completion_text(c)) for c, inst in zip(completions, instance)]


__all__ = ["GeneralPointsEnvironment", "VirlEnvironment", "ENVIRONMENTS", "reply_reward"]
