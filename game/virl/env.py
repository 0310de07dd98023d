"""`sftvsrl/VIRL-v0`: the V-IRL episode as a Gymnasium environment.

Action: the model's raw reply text. Observation: a dict of the strings the prompts are filled
from (`instruction`, `action_space`, `obs_act_seq`) plus, for VL, the 2×2 street-view grid
(`image`, (2·resolution + 5)² × 3 uint8). Reward and termination follow the reference step; `info`
carries the reference's info keys plus `step` (the structured `StepRecord`) and `rail_index`.
`render()` (render_mode "rgb_array") returns the top-down map synchronised with the episode.

`reset(seed=s, options={'route_idx': i, 'heading': h})`: the seed fixes route, heading and drops.
With `rng_mode="reference"`, `s` plays the role of the reference's global `random.seed` value.
"""
from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .datasets import VirlData, open_source
from .episode import (DEFAULT_DROP_RATE, DEFAULT_STRAIGHT_LINE_LENGTH, DEFAULT_VERIFY_ITER, VirlEpisode,
                      start_episode)
from .render import RESOLUTION, street_view_grid

MAX_TEXT = 65536
MAX_EPISODE_STEPS = 300


def _charset(data: VirlData) -> str:
    chars = set(string.printable) | {chr(c) for c in range(0xA0, 0x180)}
    for r in data.routes:
        chars.update(r.record.get("milestone_info", ""))
    return "".join(sorted(chars))


class VirlEnv(gym.Env):
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
        obs = {k: spaces.Text(MAX_TEXT, min_length=0, charset=charset)
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
        obs = {"instruction": ep.instruction_text, "action_space": ep.action_space_text,
               "obs_act_seq": ep.obs_act_seq()}
        if not self.language_only:
            obs["image"] = self.street_view_grid().copy()     # callers own what we return
        return obs

    def street_view_grid(self) -> np.ndarray:
        """The 2×2 grid at the current rail entry (reused while the agent stays there)."""
        key = self.episode.index
        if self._grid_cache is None or self._grid_cache[0] != key:
            entry = self.episode.entry
            pano, rotation = self.data.panorama(entry)
            img = street_view_grid(pano, entry.heading, rotation=rotation, resolution=self.resolution)
            img.setflags(write=False)
            self._grid_cache = (key, img)
        return self._grid_cache[1]

    def _info(self, record=None) -> dict:
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
        from .mapview import episode_map
        return np.asarray(episode_map(self.episode, self.data.features, size=480).convert("RGB"))
