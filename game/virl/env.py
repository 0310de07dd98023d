"""Gymnasium environment `sftvsrl/VIRL-v0` (registered by `game.envs`): the V-IRL episode behind
Gymnasium's interface (`VirlEnv`; its docstring documents the spaces, rewards and arguments)."""
from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .datasets import VirlData, open_source
from .episode import (DEFAULT_DROP_RATE, DEFAULT_STRAIGHT_LINE_LENGTH, DEFAULT_VERIFY_ITER, VirlEpisode,
                      start_episode)
from .mapview import episode_map
from .render import RESOLUTION, street_view_grid

MAX_TEXT = 65536
MAX_EPISODE_STEPS = 300


def _charset(data: VirlData) -> str:
    chars = set(string.printable) | {chr(c) for c in range(0xA0, 0x180)}
    for r in data.routes:
        chars.update(r.record.get("milestone_info", ""))
    return "".join(sorted(chars))


class VirlEnv(gym.Env):
    """## Description

    V-IRL navigation, the second task of "SFT Memorizes, RL Generalizes" (Chu et al., 2025): the
    agent follows a route's step-by-step instructions ("Turn right to face north. Move forward
    until you reach the destination …") through real streets, one action per position on the
    route's rail. At every position it answers in the paper's reply format (a JSON-like block with
    `"current observation"`, `"current instruction"` and `"action"`) and is graded by the
    reference verifier; a wrong answer may be retried with the verifier's feedback while the
    position's verify budget lasts. Text variant (`language_only=True`): the observation is the
    oracle landmark text; vision variant: a 2×2 street-view grid at the current position.

    ## Action Space

    `Text(max_length=65536)` over the printable characters and the route set's street names: the
    raw model reply. Fields are extracted exactly as the reference does (JSON first, else the
    `"<key>": "…"` regex, else the string `None`); the action is compared with the ground truth
    exactly (case- and space-sensitive).

    ## Observation Space

    A `Dict` of the strings the paper's prompt is filled from:

    | key | space | meaning |
    |---|---|---|
    | `instruction` | `Text` | the route's numbered instruction sentences |
    | `action_space` | `Text` | the actions allowed: compass turns (`absolute_action=True`, ID) or left/right turns (rule OOD), `forward()`, `stop()` |
    | `obs_act_seq` | `Text` | `O_i:` / `A_i:` lines of the moves so far, then `O_k:` for the current position |
    | `image` | `Box(0, 255, (2·resolution + 5, 2·resolution + 5, 3), uint8)` | only when `language_only=False`: the 2×2 street-view grid |

    ## Rewards

    The reference table: +1 correct action; −1 wrong action; −1.5 wrong observation (the reply's
    intersection claim disagrees with the truth); −1 for the call after a position's budget ran
    out (its text is ignored).

    ## Episode End

    `terminated` when `stop()` is answered correctly at the destination (`info["is_success"]`
    True when no budget was exhausted on the way), or on the budget-exhausted call at the last
    position. `truncated` on the call after `verify_iter` graded attempts at one position, and
    after `max_episode_steps` calls. Stepping after `terminated` or a budget truncation raises
    `EpisodeOver`.

    ## Arguments

    ```python
    gym.make("sftvsrl/VIRL-v0", source="bundled:helsinki", language_only=True, absolute_action=True,
             verify_iter=2, drop_rate=0.5, straight_line_length=5, relocation=True, rng_mode="native",
             resolution=RESOLUTION, max_episode_steps=300, trust_pickle=False)
    ```

    - `source`: a route set: `bundled:helsinki` (ID), `bundled:helsinki-ood` (held-out streets),
      a released directory (`nyc_1k_routes/`, `VLN_mini/`), or an opened `VirlData`.
    - `language_only`: False adds the street-view grid (the source needs street views or map features).
    - `absolute_action`: compass directions (ID) or relative turns (the paper's rule OOD).
    - `verify_iter`: graded attempts per position (the paper: 2).
    - `drop_rate`, `straight_line_length`, `relocation`: how the rail is built from the route
      (each interpolated candidate is dropped with `drop_rate`; positions snap to panoramas).
    - `rng_mode`: `"native"` (a generator per draw) or `"reference"` (one stream in the
      reference's call order: a seed equal to its global `random.seed` replays its rail).
    - `trust_pickle`: allow a released directory's pickled panorama mapping (trusted data only).

    `reset(seed=s, options={"route_idx": i, "heading": h})`: the seed fixes route (unless given),
    initial heading (unless given) and rail drops. `info` carries the reference's info keys
    (`global_instruction`, `current_instruction`, `gt_action`, `Verify Info`, `is_success`, …)
    plus `step` (the structured `StepRecord`), `rail_index` and `route_id`. `render()`
    (render_mode `"rgb_array"`) returns the top-down map synchronised with the episode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, source: str | VirlData | None = None, *, language_only: bool = True,
                 absolute_action: bool = True, verify_iter: int = DEFAULT_VERIFY_ITER,
                 drop_rate: float = DEFAULT_DROP_RATE, straight_line_length: int = DEFAULT_STRAIGHT_LINE_LENGTH,
                 relocation: bool = True, rng_mode: str = "native", resolution: int = RESOLUTION,
                 max_episode_steps: int = MAX_EPISODE_STEPS, render_mode: str | None = None,
                 trust_pickle: bool = False):
        self.data = source if isinstance(source, VirlData) else open_source(source, trust_pickle=trust_pickle)
        if not language_only and not self.data.has_images:
            raise ValueError(f"{self.data.name}: VL needs street views or map features")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.language_only = language_only
        self.absolute_action = absolute_action
        self.verify_iter, self.drop_rate = verify_iter, drop_rate
        self.straight_line_length, self.relocation = straight_line_length, relocation
        self.rng_mode, self.resolution = rng_mode, resolution
        self.max_episode_steps = max_episode_steps
        charset = _charset(self.data)
        obs: dict[str, spaces.Space] = {k: spaces.Text(MAX_TEXT, min_length=0, charset=charset)
               for k in ("instruction", "action_space", "obs_act_seq")}
        if not language_only:
            side = 2 * resolution + 5
            obs["image"] = spaces.Box(0, 255, (side, side, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Text(MAX_TEXT, min_length=0, charset=charset)
        self.episode: VirlEpisode | None = None
        self._grid_cache: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------------------------
    def _observation(self) -> dict:
        ep = self.episode
        assert ep is not None, "reset() first"
        obs: dict[str, Any] = {"instruction": ep.instruction_text, "action_space": ep.action_space_text,
               "obs_act_seq": ep.obs_act_seq()}
        if not self.language_only:
            obs["image"] = self.street_view_grid().copy()     # callers own what we return
        return obs

    def street_view_grid(self) -> np.ndarray:
        """The 2×2 grid at the current rail entry (reused while the agent stays there)."""
        assert self.episode is not None, "reset() first"
        key = self.episode.index
        if self._grid_cache is None or self._grid_cache[0] != key:
            entry = self.episode.entry
            pano, rotation = self.data.panorama(entry)
            img = street_view_grid(pano, entry.heading, rotation=rotation, resolution=self.resolution)
            img.setflags(write=False)
            self._grid_cache = (key, img)
        return self._grid_cache[1]

    def _info(self, record=None) -> dict:
        assert self.episode is not None, "reset() first"
        info = self.episode.info
        info["rail_index"] = self.episode.index
        info["route_id"] = self.episode.rail.route.route_id
        info["step"] = record.to_dict() if record is not None else None
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        ep_seed = seed if seed is not None else int(self.np_random.integers(0, 2 ** 31 - 1))
        route_idx = options.get("route_idx")
        if route_idx is not None:
            route_idx = int(route_idx)
        self._grid_cache = None
        self.episode = start_episode(      # no mapping in the data: an exact one for the route
            self.data.routes, seed=ep_seed, route_idx=route_idx, heading=options.get("heading"),
            absolute_action=self.absolute_action, mapping=self.data.mapping, relocation=self.relocation,
            drop_rate=self.drop_rate, straight_line_length=self.straight_line_length,
            verify_iter=self.verify_iter, language_only=self.language_only, rng_mode=self.rng_mode)
        return self._observation(), self._info()

    def step(self, action):
        if self.episode is None:
            raise RuntimeError("call reset() first")
        text = action if isinstance(action, str) else str(action)
        record = self.episode.step(text)
        truncated = record.truncated or (self.episode.n_calls >= self.max_episode_steps
                                         and not record.terminated)
        return self._observation(), float(record.reward), record.terminated, truncated, self._info(record)

    def render(self):
        if self.render_mode != "rgb_array" or self.episode is None:
            return None
        return np.asarray(episode_map(self.episode, self.data.features, size=480).convert("RGB"))
