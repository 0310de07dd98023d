"""Gymnasium registrations for the engines (`import game.envs` registers them)."""
from __future__ import annotations

import gymnasium as gym

_REGISTRATIONS = {
    "sftvsrl/GeneralPoints-v0": "game.gp.env:GeneralPointsEnv",
    "sftvsrl/VIRL-v0": "game.virl.env:VirlEnv",
}


def register_all() -> None:
    for env_id, entry_point in _REGISTRATIONS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


register_all()
