"""The stateful V-IRL episode (spec §1.3, §1.5): one walk along a rail with the 2-try budget,
the observation/action history text, per-step records and metrics.

Randomness: an episode never touches the global `random` state. `start_episode` draws the route
(when no index is given), the initial heading and the drop decisions from private generators:
- `rng_mode="reference"`: one `random.Random(seed)` consumed in the reference's call order
  (`choice` for the route, `randint(0, 359)` for the heading, then `random()` per candidate), so a
  seed equal to the reference's global `random.seed` value reproduces its rail exactly;
- `rng_mode="native"` (default): independent generators per purpose, derived from the seed, so the
  heading does not depend on whether the route was drawn. Same seed, same episode, either way.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..prompts import response_virl
from .rail import Rail, RailEntry, build_rail
from .routes import PanoMapping, Route, exact_mapping
from .verifier import VERIFY_EXCEEDED, Outcome, Verdict, outcome_of, verify

VL_CURRENT_OBS = "You observe an image of 4 views; "
DEFAULT_VERIFY_ITER = 2
DEFAULT_DROP_RATE = 0.5
DEFAULT_STRAIGHT_LINE_LENGTH = 5


class EpisodeOver(RuntimeError):
    """`step()` was called after the episode terminated or was truncated."""


@dataclass(frozen=True)
class StepRecord:
    """Everything one `step()` call did."""
    call: int                      # 1-based call number within the episode
    model_output: str
    parsed_action: Any
    parsed_observation: Any
    graded: bool                   # False for the budget-exhausted call
    reward: float
    verify_info: str
    terminated: bool
    truncated: bool
    is_success: bool
    rail_index_before: int
    rail_index_after: int
    gt_action: str
    reference_raises: bool = False

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.reward, self.graded)

    def to_dict(self) -> dict:
        return asdict(self)


def obs_act_text(history: Sequence[tuple[str, str]], current_oracle: str, *, language_only: bool) -> str:
    """`O_i:`/`A_i:` lines for completed moves, then `O_k:` for now and an empty `A_k: ` line."""
    lines = [f"O_{i}: {o}\nA_{i}: {a}\n" for i, (o, a) in enumerate(history, start=1)]
    k = len(history) + 1
    if language_only:
        current = current_oracle
    else:
        current = VL_CURRENT_OBS + ("You observe an intersection" if "intersection" in current_oracle else "")
    lines.append(f"O_{k}: {current}\nA_{k}: \n")
    return "".join(lines)


class VirlEpisode:
    """## Description

    One V-IRL episode: a walk along one route's rail (`Rail`: positions with their ground-truth
    action, instruction sentence and oracle observation) with a verify budget per position — the
    engine behind the Gymnasium env (`VirlEnv`), the task registry's sessions
    (`game.tasks.VirlSession`, used by the runner, the evaluation and training) and the UI. Make
    one with `start_episode` (route, heading and drops drawn from a seed).

    ## Action

    `step(model_output)`: one raw model reply (text), graded by the reference verifier
    (`game.virl.verifier.verify`) against the current position's ground-truth action and
    observation; `verdict(model_output)` grades without spending a try.

    ## Observation

    What the prompt is filled from: `instruction_text`, `action_space_text` and `obs_act_seq()`
    (the `O_i:` / `A_i:` history and the current observation: oracle text for L, the image line
    for VL); `entry` is the current rail position (for the street-view grid); `info` is the
    reference's info dict.

    ## Rewards

    +1 correct action; −1 wrong action; −1.5 wrong observation (an intersection claim that
    disagrees with the truth); −1 `Exceed maximum verify steps` for the call after a position's
    budget ran out (its text ignored).

    ## Episode End

    `terminated` after a correct `stop()` at the destination, or on the budget-exhausted call at
    the last position; `truncated` on any budget-exhausted call. `success`: terminated without
    ever exhausting a budget. `step` after the end raises `EpisodeOver`.

    ## Arguments

    - `rail`: the positions to walk (`build_rail`); `verify_iter`: graded tries per position (the
      paper: 2); `language_only`: the observation line for L or VL prompts; `seed`: recorded only.

    `records` holds one `StepRecord` per call; `per_step_accuracy` is the paper's V-IRL metric.
    """

    def __init__(self, rail: Rail, *, verify_iter: int = DEFAULT_VERIFY_ITER, language_only: bool = True,
                 seed: int | None = None):
        if verify_iter < 1:
            raise ValueError("verify_iter must be >= 1")
        self.rail = rail
        self.verify_iter = verify_iter
        self.language_only = language_only
        self.seed = seed
        self.index = 0
        self.remaining = verify_iter
        self.history: list[tuple[str, str]] = []    # (oracle observation, action) per move
        self.visited: list[int] = [0]               # rail indices reached, in order
        self.records: list[StepRecord] = []
        self.is_success = True
        self.terminated = False
        self.truncated = False
        self.verify_info: str | None = None
        self._info = self._make_info(reset=True)

    # ---- text the prompts are filled from -------------------------------------------------
    @property
    def entry(self) -> RailEntry:
        return self.rail.entries[min(self.index, len(self.rail.entries) - 1)]

    @property
    def instruction_text(self) -> str:
        """`{instruction}`: numbered sentences, one per line, ending with a newline."""
        return self.rail.instruction_text

    @property
    def action_space_text(self) -> str:
        """`{action_space}` for the rail's action space."""
        return self.rail.action_space_text

    @property
    def current_instruction(self) -> str:
        return self.entry.instruction

    @property
    def oracle_observation(self) -> str:
        return self.entry.oracle_observation

    def obs_act_seq(self, language_only: bool | None = None) -> str:
        """`{obs_act_seq}` for L (oracle text) or VL (the image line for the current step)."""
        lo = self.language_only if language_only is None else language_only
        return obs_act_text(self.history, self.entry.oracle_observation, language_only=lo)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def info(self) -> dict:
        """The reference's info dict (stale after a budget-exhausted call, as in the reference)."""
        return dict(self._info)

    # ---- metrics --------------------------------------------------------------------------
    @property
    def n_calls(self) -> int:
        return len(self.records)

    @property
    def n_correct(self) -> int:
        return sum(1 for r in self.records if r.reward == 1.0)

    @property
    def per_step_accuracy(self) -> float:
        """Calls with +1 over all calls (retries and the ungraded third call count)."""
        return self.n_correct / self.n_calls if self.records else 0.0

    @property
    def success(self) -> bool:
        """The stop entry was reached correctly without ever exhausting a budget."""
        return self.terminated and self.is_success

    # ---- stepping -------------------------------------------------------------------------
    def _make_info(self, reset: bool = False) -> dict:
        e = self.entry
        return {
            "global_instruction": self.rail.instruction_text,
            "current_instruction": e.instruction,
            "instruction_idx": 0 if reset else e.instruction_idx,   # 0 at reset: a reference quirk
            "gt_action": e.gt_action,
            "Verify Info": self.verify_info,
            "current_obs": e.oracle_observation,
            "obs_act_seq": self.obs_act_seq(),
            "is_success": self.is_success,
        }

    def verdict(self, model_output: str) -> Verdict:
        """The verifier's verdict on one reply at the current position, without spending a try."""
        entry = self.entry
        return verify(model_output, entry.gt_action, entry.observation)

    def step(self, model_output: str) -> StepRecord:
        if self.done:
            raise EpisodeOver("the episode is over; start a new one")
        before = self.index
        entry = self.entry
        self.remaining -= 1
        graded = self.remaining != -1
        verdict: Verdict | None = None
        if not graded:
            reward, self.verify_info = -1.0, VERIFY_EXCEEDED
            self.is_success = False
            self.truncated = True
            self.terminated = entry.is_stop
            if not entry.is_stop:
                # The reference moves on before ending the episode: its info then describes the
                # next entry, except `obs_act_seq`, which stays as it was (history is unchanged).
                self.index += 1
                stale_seq = self._info["obs_act_seq"]
                self._info = self._make_info()
                self._info["obs_act_seq"] = stale_seq
            self._info["Verify Info"] = self.verify_info
            self._info["is_success"] = False
        else:
            verdict = self.verdict(model_output)
            reward, self.verify_info = verdict.reward, verdict.verify_info
            if verdict.correct:
                if entry.is_stop:
                    self.terminated = True
                else:
                    self.history.append((entry.oracle_observation, entry.gt_action))
                    self.index += 1
                    self.visited.append(self.index)
                    self.remaining = self.verify_iter
            self._info = self._make_info()
        record = StepRecord(
            call=len(self.records) + 1, model_output=model_output,
            parsed_action=verdict.parsed_action if verdict else None,
            parsed_observation=verdict.parsed_observation if verdict else None,
            graded=graded, reward=reward, verify_info=self.verify_info,
            terminated=self.terminated, truncated=self.truncated, is_success=self.is_success,
            rail_index_before=before, rail_index_after=self.index, gt_action=entry.gt_action,
            reference_raises=bool(verdict and verdict.reference_raises))
        self.records.append(record)
        return record

    def to_dict(self) -> dict:
        """A JSON-ready transcript: route, settings, every step record and the metrics."""
        return {"route_id": self.rail.route.route_id, "route_index": self.rail.route.index,
                "seed": self.seed, "init_heading": self.rail.init_heading,
                "absolute_action": self.rail.absolute_action, "language_only": self.language_only,
                "verify_iter": self.verify_iter, "rail_gt_actions": self.rail.gt_actions,
                "steps": [r.to_dict() for r in self.records], "terminated": self.terminated,
                "truncated": self.truncated, "success": self.success,
                "per_step_accuracy": self.per_step_accuracy}

    def oracle_reply(self) -> str:
        """The SFT-format reply (`ResponseVIRL`) that is correct at the current position."""
        e = self.entry
        return response_virl(e.oracle_observation, e.instruction, e.gt_action)


def start_episode(routes: Sequence[Route], *, seed: int = 0, route_idx: int | None = None,
                  heading: int | None = None, absolute_action: bool = True,
                  mapping: PanoMapping | None = None, relocation: bool = True,
                  drop_rate: float = DEFAULT_DROP_RATE,
                  straight_line_length: int = DEFAULT_STRAIGHT_LINE_LENGTH,
                  verify_iter: int = DEFAULT_VERIFY_ITER, language_only: bool = True,
                  rng_mode: str = "native") -> VirlEpisode:
    """Pick a route, draw the initial heading and the drops, build the rail, start an episode.

    `heading` overrides the initial heading (no draw is made for it). With `relocation` and no
    `mapping`, an exact mapping (start, key points, candidates) is used, i.e. no snapping."""
    if not routes:
        raise ValueError("no routes")
    if rng_mode == "reference":
        route_rng = heading_rng = drop_rng = random.Random(seed)
    elif rng_mode == "native":
        route_rng = random.Random(f"virl-route:{seed}")
        heading_rng = random.Random(f"virl-heading:{seed}")
        drop_rng = random.Random(f"virl-drop:{seed}")
    else:
        raise ValueError(f"unknown rng_mode {rng_mode!r} (native or reference)")
    if route_idx is None:
        route = route_rng.choice(list(routes))
    else:
        if not 0 <= route_idx < len(routes):
            raise IndexError(f"route_idx {route_idx} out of range (0..{len(routes) - 1})")
        route = routes[route_idx]
    if heading is not None:
        h0 = int(heading) % 360
    elif route.record_init_heading:
        h0 = route.record_init_heading
    else:
        h0 = heading_rng.randint(0, 359)
    if relocation and mapping is None:
        mapping = exact_mapping(route, straight_line_length)
    rail = build_rail(route, h0, absolute_action=absolute_action, mapping=mapping, relocation=relocation,
                      drop_rate=drop_rate, straight_line_length=straight_line_length, rng=drop_rng)
    return VirlEpisode(rail, verify_iter=verify_iter, language_only=language_only, seed=seed)
