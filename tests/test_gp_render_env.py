"""Card images (the reference layout) and the Gymnasium environment."""
from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

import game.envs  # noqa: F401  (registers the environments)
from game.gp.cards import Card
from game.gp.deal import Deal
from game.gp.render import CARD_H, CARD_W, TABLE_GREEN, card_image, encode, table_image, table_layout

HAND = [Card(13, "S"), Card(5, "H"), Card(10, "D"), Card(1, "C")]


def test_reference_layout_numbers():
    w, h, positions = table_layout(1200)
    assert (w, h) == (270, 378)
    assert positions == [(5, 411), (302, 411), (599, 411), (896, 411)]


def test_table_image_matches_reference_composition():
    img = table_image(HAND)
    assert img.size == (1200, 1200) and img.mode == "RGB"
    px = np.asarray(img)
    assert tuple(px[100, 100]) == TABLE_GREEN
    assert tuple(px[411 + 189, 4]) == TABLE_GREEN  # left of the first card
    # transparent card corners are pasted without a mask: they come out black, as in the reference
    for x, y in [(5, 411), (302 + 269, 411), (599, 411 + 377), (896 + 269, 411 + 377)]:
        assert tuple(px[y, x]) == (0, 0, 0), (x, y)
    # card centres are the card's paper colour, not the table
    for x in (5, 302, 599, 896):
        centre = px[411 + 20, x + 135]
        assert centre.mean() > 200


def test_suit_colours_are_visible():
    def red_share(cards):
        px = np.asarray(table_image(cards)).astype(int)
        red = (px[..., 0] > 150) & (px[..., 1] < 90) & (px[..., 2] < 110)
        return red.mean()

    black_hand = [Card(r, s) for r, s in [(2, "S"), (7, "C"), (9, "S"), (12, "C")]]
    red_hand = [Card(r, s) for r, s in [(2, "H"), (7, "D"), (9, "H"), (12, "D")]]
    assert red_share(black_hand) < 0.001 < 0.01 < red_share(red_hand)


def test_card_faces_differ_and_have_transparent_corners():
    faces = {c: np.asarray(card_image(c)) for c in [Card(r, s) for r in (1, 7, 10, 11, 12, 13) for s in "SH"]}
    arrays = list(faces.values())
    assert all(a.shape == (CARD_H, CARD_W, 4) for a in arrays)
    assert all(a[0, 0, 3] == 0 and a[CARD_H // 2, CARD_W // 2, 3] == 255 for a in arrays)
    assert len({a.tobytes() for a in arrays}) == len(arrays)


def test_caption_and_encodings():
    plain, captioned = np.asarray(table_image(HAND)), np.asarray(table_image(HAND, caption=True))
    assert (plain != captioned).any() and (plain[:800] == captioned[:800]).all()
    png, jpeg = encode(table_image(HAND), "png"), encode(table_image(HAND), "jpeg")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and jpeg[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(jpeg)).size == (1200, 1200)
    with pytest.raises(ValueError):
        encode(table_image(HAND), "gif")


@pytest.mark.parametrize("kwargs", [{}, {"language_only": False, "rule": "face_jqk", "ood": True, "suits": "black"}])
def test_env_passes_gymnasium_checker(kwargs):
    env = gym.make("sftvsrl/GeneralPoints-v0", **kwargs)
    check_env(env.unwrapped, skip_render_check=True)


def test_env_seeded_reset_step_and_info():
    env = gym.make("sftvsrl/GeneralPoints-v0")
    obs1, info1 = env.reset(seed=7)
    obs2, info2 = env.reset(seed=7)
    assert info1["deal_id"] == info2["deal_id"] and obs1["cards"] == obs2["cards"]
    hand = Deal.from_id(info1["deal_id"])
    assert obs1["cards"] == repr(hand.labels)
    obs, reward, terminated, truncated, info = env.step('"formula": "1+1"')
    assert reward < 0 and not terminated and info["verify_info"] and obs["feedback"] == info["verify_info"]
    assert obs["remaining"] == 4
    obs, info = env.reset(options={"deal_id": "HKC5D2C4"})
    assert obs["cards"] == "['K', '5', '2', '4']"
    _, reward, terminated, _, info = env.step('"formula": "10+5*2+4=24"')
    assert reward == 5.0 and terminated and info["exact_correct"]


def test_env_image_observation_and_render():
    env = gym.make("sftvsrl/GeneralPoints-v0", language_only=False, suits="red", render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    assert obs["image"].shape == (1200, 1200, 3) and obs["image"].dtype == np.uint8
    assert (env.render() == obs["image"]).all()
