"""A GeneralPoints episode: one hand, a verify budget, and sequential revision.

Reference semantics (`general_points_oneline.py` `step`): every call first spends one unit of the
budget (`verify_iter`, 5 in the paper); a call that finds the budget already spent (the 6th)
ignores its text and returns −1 `step_limit_reached` with `truncated=True`. The episode
terminates only on +5. One deliberate difference: a call after the episode has ended raises
`EpisodeOver` (the reference silently grades it again because its counter passes −1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .cards import Rule
from .deal import Deal
from .verifier import Verdict, step_limit_verdict, verify

DEFAULT_VERIFY_ITER = 5


class EpisodeOver(RuntimeError):
    """`step` was called after the episode ended."""


@dataclass
class StepRecord:
    """One call of an episode: what the model said, what the verifier made of it."""

    call: int
    output: str
    verdict: Verdict
    truncated: bool
    remaining_after: int

    @property
    def reward(self) -> float:
        return self.verdict.reward

    @property
    def verify_info(self) -> str:
        return self.verdict.verify_info

    @property
    def terminated(self) -> bool:
        return self.verdict.terminated

    @property
    def graded(self) -> bool:
        """False for the budget-exhausted call, whose text is ignored."""
        return not self.truncated

    def to_dict(self) -> dict:
        return {
            "call": self.call, "output": self.output, "reward": self.reward,
            "verify_info": self.verify_info, "terminated": self.terminated,
            "truncated": self.truncated, "remaining_after": self.remaining_after,
            "graded": self.graded, "verdict": self.verdict.to_dict(),
        }


@dataclass
class Episode:
    """## Description

    One GeneralPoints episode: one hand, a verify budget and sequential revision — the engine
    behind the Gymnasium env (`GeneralPointsEnv`), the task registry's sessions
    (`game.tasks.GPSession`, used by the runner, the evaluation and training) and the UI. It
    neither deals nor prompts: it grades the replies to one given `deal`.

    ## Action

    `step(output)`: one raw model reply (text), graded by the reference verifier
    (`game.gp.verifier.verify`) against the hand's cards and rule-mapped numbers; `verdict(output)`
    grades without spending a try.

    ## Observation

    What the prompt is filled from: `deal.labels` (the cards as the GP-L prompt shows them),
    `numbers` (their values under `rule`), `target`; and after a failed try `last_verify_info`
    (the paper's feedback turn `You failed this trial because <Verify Info>`).

    ## Rewards

    The verifier's (see `GeneralPointsEnv`): +5 correct, +1 partial, −1 wrong value, −1.5 wrong
    cards (image variant), −2 per number fault, −3 illegal formula, penalties adding up; −1
    `step_limit_reached` for the call after the budget ran out. `episode_return` sums them.

    ## Episode End

    `done` after a +5 (`success`), after the budget-exhausted call (`verify_iter` + 1-th call, its
    text ignored, `truncated`), or after the first call when `enable_verification` is False (the
    recognition protocol). `step` after the end raises `EpisodeOver`.

    ## Arguments

    - `deal`: the hand (`Deal`, with its target); `rule`: `Rule.FACE10` (J/Q/K = 10) or
      `Rule.FACE_JQK` (11/12/13, rule OOD).
    - `language_only`: False grades the cards read from the image too (−1.5 when wrong).
    - `verify_iter`: graded tries (the paper: 5). `enable_verification`: False for one attempt.
    - `lenient`: the opt-in friendlier formula parser (not the paper's).

    `steps` holds one `StepRecord` per call; `remaining` is the budget left.
    """

    deal: Deal
    rule: Rule = Rule.FACE10
    language_only: bool = True
    verify_iter: int = DEFAULT_VERIFY_ITER
    enable_verification: bool = True
    lenient: bool = False
    steps: list[StepRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rule = Rule.parse(self.rule)
        if self.verify_iter < 1:
            raise ValueError(f"verify_iter must be at least 1, got {self.verify_iter}")
        self.remaining = self.verify_iter

    @property
    def numbers(self) -> list[int]:
        return self.deal.numbers(self.rule)

    @property
    def target(self) -> int:
        return self.deal.target

    @property
    def done(self) -> bool:
        if not self.steps:
            return False
        last = self.steps[-1]
        return last.terminated or last.truncated or not self.enable_verification

    @property
    def success(self) -> bool:
        """The paper's episode success: some step returned +5."""
        return any(s.terminated for s in self.steps)

    @property
    def episode_return(self) -> float:
        return sum(s.reward for s in self.steps)

    @property
    def last_verify_info(self) -> str | None:
        """None right after reset (the chat is rebuilt then), else the last feedback string."""
        return self.steps[-1].verify_info if self.steps else None

    def verdict(self, output: str) -> Verdict:
        """The verifier's verdict on one reply for this hand, without spending a try."""
        return verify(output, self.numbers, self.deal.labels, target=self.target,
                      language_only=self.language_only, lenient=self.lenient)

    def step(self, output: str) -> StepRecord:
        """Grade one raw model reply; raises `EpisodeOver` once the episode has ended."""
        if self.done:
            raise EpisodeOver("the episode has ended (solved or out of tries); start a new one")
        self.remaining -= 1
        if self.remaining == -1:
            verdict, truncated = step_limit_verdict(), True
        else:
            verdict, truncated = self.verdict(output), False
        record = StepRecord(len(self.steps) + 1, output, verdict, truncated, self.remaining)
        self.steps.append(record)
        return record

    def to_dict(self) -> dict:
        return {
            "deal_id": self.deal.id, "cards": self.deal.labels, "card_ids": self.deal.card_ids,
            "numbers": self.numbers, "target": self.target, "rule": self.rule.value,
            "language_only": self.language_only, "verify_iter": self.verify_iter,
            "success": self.success, "episode_return": self.episode_return,
            "steps": [s.to_dict() for s in self.steps],
        }


__all__ = ["Episode", "EpisodeOver", "StepRecord", "DEFAULT_VERIFY_ITER"]
