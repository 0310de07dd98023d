"""V-IRL reply parsing and grading: the `step_rewards_virl` equivalent (spec §1.4, §1.5, §2.6).

Parsing: the whole reply as JSON first (its field), else the regex `"<key>": "(.*?)"` (no DOTALL,
exactly one space after the colon), else the string `None`. Grading: exact, case- and
space-sensitive comparison of the action with the ground truth; on a mismatch the model's
"current observation" decides between −1.5 (intersection claims) and −1.

Where the reference crashes (a JSON `"current observation"` that is null, a number or a boolean
with a wrong action: Python's `in` raises TypeError), we never raise: such an observation is
treated like a missing one (the string `None`), the closest reply the reference does grade.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

CORRECT_ACTION = 1.0
INCORRECT_ACTION = -1.0
INCORRECT_OBS = -1.5
INCORRECT_INSTRUCTION = -1.75   # defined by the reference, never produced

FORMAT_BLOCK = ('\n[Output]\n{{\n  "current observation": latest observation from the streetview grid,\n'
                '  "current instruction": analyze the full instruction and identify the sentence to be executed,\n'
                '  "action": the action to be taken chosen from the action space,\n}}')
VERIFY_CORRECT = "Correct action."
VERIFY_WRONG_ACTION = ("you make incorrect action. Please avoid this action and try again in the same format:"
                       + FORMAT_BLOCK + ".")
VERIFY_NOT_AT_INTERSECTION = ("you are not at any intersection. Please avoid this observation and try again "
                              "in the same format:" + FORMAT_BLOCK + ".")
VERIFY_AT_INTERSECTION = ("you are at an intersection. Please avoid this observation and try again in the "
                          "same format:" + FORMAT_BLOCK + ".")
VERIFY_EXCEEDED = "Exceed maximum verify steps"

_MISSING = "None"


class Outcome(str, Enum):
    """Failure taxonomy of one V-IRL call, from the reference's reward classes."""

    CORRECT = "correct"                      # +1
    WRONG_ACTION = "wrong_action"            # −1
    WRONG_OBSERVATION = "wrong_observation"  # −1.5: the intersection claim disagrees with the truth
    BUDGET_EXCEEDED = "budget_exceeded"      # −1 on the call after the budget ran out (text ignored)


def re_match(text: str, key: str) -> Any:
    """The reference's field extraction: JSON field, else regex, else the string "None".
    A JSON value is returned as is (it may be null, a number, a list...)."""
    try:
        return json.loads(text)[key]
    except Exception:  # noqa: BLE001 - invalid JSON, not a container, missing key: fall back to the regex
        pass
    m = re.search(f'"{re.escape(key)}": "(.*?)"', text)
    return m.group(1) if m else _MISSING


def _mentions_intersection(obs: Any) -> bool:
    """Python's `'intersection' in obs` for str / list / dict / tuple; un-iterable values count as
    a missing observation (the reference raises TypeError there)."""
    if isinstance(obs, (str, list, tuple, dict)):
        return "intersection" in obs
    return "intersection" in _MISSING


@dataclass(frozen=True)
class Verdict:
    reward: float
    verify_info: str
    parsed_action: Any
    parsed_observation: Any          # only extracted on a wrong action; None otherwise
    reference_raises: bool = False   # the reference implementation would have raised here

    @property
    def correct(self) -> bool:
        return self.reward == CORRECT_ACTION

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.reward)


def outcome_of(reward: float, graded: bool = True) -> Outcome:
    """The outcome class of a call's reward (`graded=False`: the budget-exhausted call)."""
    if not graded:
        return Outcome.BUDGET_EXCEEDED
    if reward == CORRECT_ACTION:
        return Outcome.CORRECT
    return Outcome.WRONG_OBSERVATION if reward == INCORRECT_OBS else Outcome.WRONG_ACTION


def verify(model_output: str, gt_action: str, gt_observation: str) -> Verdict:
    """Grade one reply against a rail entry's ground-truth action and landmark-only observation."""
    if not isinstance(model_output, str):
        model_output = "" if model_output is None else str(model_output)
    action = re_match(model_output, "action")
    if action == gt_action:
        return Verdict(CORRECT_ACTION, VERIFY_CORRECT, action, None)
    obs = re_match(model_output, "current observation")
    raises = not isinstance(obs, (str, list, tuple, dict))
    said = _mentions_intersection(obs)
    truth = "intersection" in gt_observation
    if said and not truth:
        return Verdict(INCORRECT_OBS, VERIFY_NOT_AT_INTERSECTION, action, obs, raises)
    if not said and truth:
        return Verdict(INCORRECT_OBS, VERIFY_AT_INTERSECTION, action, obs, raises)
    return Verdict(INCORRECT_ACTION, VERIFY_WRONG_ACTION, action, obs, raises)


