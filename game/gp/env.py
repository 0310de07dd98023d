"""Gymnasium environment `sftvsrl/GeneralPoints-v0` (registered by `game.envs`)."""
from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .cards import SUITS, Rule
from .deal import Deal, DealConfig, Dealer
from .episode import DEFAULT_VERIFY_ITER, Episode
from .render import table_array

MAX_TEXT = 65536
_CHARSET = frozenset(string.printable) | frozenset("×÷−–—…’“”•√²³½¼¾·°←→↑↓")


class GeneralPointsEnv(gym.Env):
    """## Description

    GeneralPoints, the arithmetic card game of "SFT Memorizes, RL Generalizes" (Chu et al., 2025):
    four cards are dealt and the agent must write a formula that evaluates to the target (24 by
    default) using each card's value exactly once with `+ - * /` and parentheses. The agent answers
    in the paper's reply format (a JSON-like block with `"cards"`, `"number"` and `"formula"`),
    and is graded by the reference verifier; failed attempts may be revised with the verifier's
    feedback until the verify budget is spent (sequential revision).

    ## Action Space

    `Text(max_length=65536)`: the raw model reply. It is parsed exactly as the reference does
    (JSON attempt, then the `"formula": "…"` / `"cards": […]` regexes).

    ## Observation Space

    A `Dict`:

    | key | space | meaning |
    |---|---|---|
    | `ranks` | `MultiDiscrete([14] * 4)` | card ranks 1..13 (A = 1, J/Q/K = 11/12/13) in dealing order |
    | `suits` | `MultiDiscrete([4] * 4)` | suit indices into `("H", "S", "D", "C")` |
    | `numbers` | `MultiDiscrete([14] * 4)` | rule-mapped values the formula must use |
    | `cards` | `Text` | Plain-Card labels as the prompt shows them, e.g. `['K', '5', '10', 'A']` |
    | `target` | `Box(1, 2**31-1, (), int64)` | the target number |
    | `remaining` | `Discrete(verify_iter + 2, start=-1)` | verify budget left |
    | `feedback` | `Text` | the last verifier message (empty after reset) |
    | `image` | `Box(0, 255, (1200, 1200, 3), uint8)` | only when `language_only=False`: the table image |

    ## Rewards

    The reference table: +5 correct; +1 partial (an unfinished prefix of a solver solution);
    −1 legal but wrong, and −1 for the call after the budget ran out; −1.5 wrong cards recognised
    (image variant only); −2 per number fault; −3 illegal characters or per sequence violation.
    Penalties add up (−4, −6 …). A correct formula spoiled by float rounding scores 0.

    ## Episode End

    `terminated` when a step scores +5. `truncated` on the call after `verify_iter` graded
    attempts (its text is ignored). Stepping after the end raises `EpisodeOver`.

    ## Arguments

    ```python
    gym.make("sftvsrl/GeneralPoints-v0", rule="face10", ood=False, suits="mixed", mode="paper",
             target=24, verify_iter=5, language_only=True, caption=False, lenient=False)
    ```

    - `rule`: `"face10"` (J/Q/K = 10, in-distribution) or `"face_jqk"` (11/12/13, rule-OOD).
    - `ood`: force at least one J/Q/K in every hand (the paper's OOD dealing).
    - `suits`: `"mixed"`, `"black"` (paper VL) or `"red"` (visual OOD).
    - `mode`: `"paper"` (reference generator, with replacement) or `"deck"` (a real deck).
    - `target`: any positive integer. `verify_iter`: graded attempts per episode.
    - `language_only`: False adds the 1200×1200 table image; recognition is then checked.
    - `caption`: draw the paper-era "Formula:" label on the image. `lenient`: opt-in friendlier parsing.

    `reset(seed=s)` deals the first hand of the stream seeded with `s`; without a seed the env's
    own stream continues. `options={"deal_id": "HKC5D2C4"}` replays a specific hand.

    `info` carries `deal_id`, `solutions` (count), the step's `verify_info`, `outcome`,
    `exact_correct` and `float_rejected`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(self, rule: str | Rule = Rule.FACE10, ood: bool = False, suits: str = "mixed",
                 mode: str = "paper", target: int = 24, verify_iter: int = DEFAULT_VERIFY_ITER,
                 language_only: bool = True, caption: bool = False, lenient: bool = False,
                 render_mode: str | None = None) -> None:
        self.config = DealConfig(Rule.parse(rule), ood, suits, mode, target)  # type: ignore[arg-type]
        self.verify_iter = verify_iter
        self.language_only = language_only
        self.caption = caption
        self.lenient = lenient
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        text = spaces.Text(max_length=MAX_TEXT, min_length=0, charset=_CHARSET)
        obs = {
            "ranks": spaces.MultiDiscrete([14] * 4),
            "suits": spaces.MultiDiscrete([4] * 4),
            "numbers": spaces.MultiDiscrete([14] * 4),
            "cards": spaces.Text(max_length=64, min_length=0, charset=_CHARSET),
            "target": spaces.Box(1, 2**31 - 1, shape=(), dtype=np.int64),
            "remaining": spaces.Discrete(verify_iter + 2, start=-1),
            "feedback": spaces.Text(max_length=1024, min_length=0, charset=_CHARSET),
        }
        if not language_only:
            obs["image"] = spaces.Box(0, 255, shape=(1200, 1200, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = text
        self._dealer = Dealer(0, self.config)
        self.episode: Episode | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._dealer = Dealer(seed, self.config)
        if options and options.get("deal_id"):
            hand = Deal.from_id(options["deal_id"])
        else:
            hand = self._dealer.next()
        self.episode = Episode(hand, self.config.rule, self.language_only, self.verify_iter,
                               lenient=self.lenient)
        return self._obs(""), self._info()

    def step(self, action: str):
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        record = self.episode.step(action)
        v = record.verdict
        info = self._info() | {"verify_info": v.verify_info, "outcome": v.outcome.value,
                                "exact_correct": v.exact_correct, "float_rejected": v.float_rejected}
        return self._obs(v.verify_info), record.reward, record.terminated, record.truncated, info

    def render(self):
        if self.render_mode == "rgb_array" and self.episode is not None:
            return table_array(self.episode.deal.cards, caption=self.caption)
        return None

    def _obs(self, feedback: str) -> dict:
        ep = self.episode
        assert ep is not None
        obs = {
            "ranks": np.array([c.rank for c in ep.deal.cards], dtype=np.int64),
            "suits": np.array([SUITS.index(c.suit) for c in ep.deal.cards], dtype=np.int64),
            "numbers": np.array(ep.numbers, dtype=np.int64),
            "cards": repr(ep.deal.labels),
            "target": np.array(ep.target, dtype=np.int64),
            "remaining": int(max(ep.remaining, -1)),
            "feedback": feedback[:1024],
        }
        if not self.language_only:
            obs["image"] = table_array(ep.deal.cards, caption=self.caption)
        return obs

    def _info(self) -> dict:
        ep = self.episode
        assert ep is not None
        return {"deal_id": ep.deal.id, "cards": ep.deal.labels, "numbers": ep.numbers,
                "solutions": len(ep.deal.solutions(ep.rule)), "remaining": ep.remaining}
