"""`sftvsrl/VIRL-v0` through Gymnasium: registration, env_checker, episodes, VL images."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import game.envs  # noqa: F401  (registers the ids)
from game.virl.datasets import open_release
from game.virl.env import VirlEnv
from virl_fixtures import fake_release


def test_check_env_language():
    env = gym.make("sftvsrl/VIRL-v0")
    check_env(env.unwrapped, skip_render_check=True)


def test_check_env_vision_on_release_layout(tmp_path):
    data = open_release(fake_release(tmp_path / "rel"), trust_pickle=True)
    env = gym.make("sftvsrl/VIRL-v0", source=data, language_only=False, resolution=48,
                   render_mode="rgb_array").unwrapped
    check_env(env)
    obs, info = env.reset(seed=1, options={"route_idx": 0, "heading": 10})
    assert obs["image"].shape == (101, 101, 3)
    assert obs["obs_act_seq"] == "O_1: You observe an image of 4 views; \nA_1: \n"
    assert env.render().ndim == 3


def test_env_episode_oracle_and_seeding():
    env = VirlEnv(absolute_action=False)
    obs, info = env.reset(seed=7)
    obs2, info2 = env.reset(seed=7)
    assert obs == obs2 and info["route_id"] == info2["route_id"]
    assert "['left', 'right', 'slightly left', 'slightly right']" in obs["action_space"]
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.episode.oracle_reply())
        total += reward
        done = terminated or truncated
    assert terminated and not truncated and info["is_success"] and info["step"]["reward"] == 1.0
    assert total == env.episode.n_calls


def test_env_garbage_action_is_graded():
    env = VirlEnv()
    env.reset(seed=3, options={"route_idx": 5})
    _, reward, terminated, truncated, info = env.step("\x00 not json at all")
    assert reward == -1.0 and not terminated and not truncated
    assert info["Verify Info"].startswith("you make incorrect action.")


def test_bundled_vl_grid_comes_from_synthetic_panoramas():
    env = VirlEnv(language_only=False, resolution=64)
    obs, _ = env.reset(seed=0, options={"route_idx": 0})
    assert obs["image"].shape == (133, 133, 3) and obs["image"].std() > 5
    assert np.array_equal(obs["image"][64:69], np.zeros((5, 133, 3), np.uint8))
