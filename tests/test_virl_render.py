"""Street-view crops, the 2×2 grid, synthetic panoramas (landmark signs where the spec says) and
the map view."""
from __future__ import annotations

import numpy as np
import pytest

from game.virl.geo import bearing_deg, offset_m, relative_word
from game.virl.mapdata import MapFeatures, Place, Street
from game.virl.mapview import render_map_png, render_map_svg
from game.virl.panorama import SyntheticPanoramas
from game.virl.render import (GRID_GAP, grid, grid_headings, perspective, street_view_grid,
                              tile_for_offset)

RES = 200          # small tiles keep the tests fast; geometry is resolution-independent


def heading_pano(w=720, h=360):
    """A panorama whose red channel encodes the column's compass heading (rotation 0)."""
    hue = (np.arange(w) * 255 // w).astype(np.uint8)
    return np.stack([np.broadcast_to(hue, (h, w)), np.zeros((h, w), np.uint8),
                     np.full((h, w), 128, np.uint8)], -1)


def tile(g, name, res=RES):
    r, c = {"TL": (0, 0), "TR": (0, 1), "BL": (1, 0), "BR": (1, 1)}[name]
    return g[r * (res + GRID_GAP): r * (res + GRID_GAP) + res, c * (res + GRID_GAP): c * (res + GRID_GAP) + res]


def test_grid_canvas_layout_and_gaps():
    tiles = [np.full((RES, RES, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    g = grid(tiles, resolution=RES)
    assert g.shape == (2 * RES + 5, 2 * RES + 5, 3) and g.dtype == np.uint8
    assert [int(tile(g, n)[0, 0, 0]) for n in ("TL", "TR", "BL", "BR")] == [10, 20, 30, 40]
    assert not g[RES:RES + GRID_GAP].any() and not g[:, RES:RES + GRID_GAP].any()   # black gaps


def test_default_grid_is_2405_square():
    g = street_view_grid(heading_pano(), 0)
    assert g.shape == (2405, 2405, 3)


@pytest.mark.parametrize("heading", [0, 10, 200, 359])
def test_crop_centres_follow_heading_order(heading):
    g = street_view_grid(heading_pano(), heading, resolution=RES, size=64)
    for name, want in zip(("TL", "TR", "BL", "BR"), grid_headings(heading)):
        centre = float(tile(g, name)[RES // 2, RES // 2, 0]) / 255 * 360
        assert abs((centre - want + 180) % 360 - 180) < 3, name


def test_rotation_shifts_the_panorama():
    pano = heading_pano()
    a = perspective(pano, 100, rotation=0, size=32)
    b = perspective(pano, 90, rotation=10, size=32)
    assert np.array_equal(a, b)


def test_tile_for_offset_matches_spec_table():
    assert [tile_for_offset(o) for o in (315, 45, 135, 225)] == ["TR", "BL", "BR", "TL"]
    assert [tile_for_offset(o) for o in (0, 90, 180, 270)] == [None] * 4


def _street_corner():
    o = (60.17, 24.94)
    streets = [Street("A", (offset_m(o, -120, 0), offset_m(o, 120, 0))),
               Street("B", (offset_m(o, 0, -120), offset_m(o, 0, 120)))]
    return o, streets


@pytest.mark.parametrize("heading, rel, expected_tile", [
    (30, "left front", "TR"), (200, "right front", "BL"), (90, "right behind", "BR"), (300, "left behind", "TL")])
def test_landmark_sign_lands_in_the_spec_tile(heading, rel, expected_tile):
    o, streets = _street_corner()
    offset = {"front": 0, "right front": 45, "right": 90, "right behind": 135, "behind": 180,
              "left behind": 225, "left": 270, "left front": 315}[rel]
    b = np.radians(heading + offset)
    spot = offset_m(o, 14 * np.sin(b), 14 * np.cos(b))
    place = Place("Cafe Regatta", "cafe", *spot)
    assert relative_word(bearing_deg(o, spot) - heading) == rel       # the text says `rel`
    with_sign = SyntheticPanoramas(MapFeatures("t", streets, [place]), width=1024, height=512).panorama(o)
    without = SyntheticPanoramas(MapFeatures("t", streets, []), width=1024, height=512).panorama(o)
    ga = street_view_grid(with_sign, heading, resolution=RES, size=128).astype(int)
    gb = street_view_grid(without, heading, resolution=RES, size=128).astype(int)
    diff = {n: int((np.abs(tile(ga, n) - tile(gb, n)).sum(-1) > 30).sum()) for n in ("TL", "TR", "BL", "BR")}
    assert max(diff, key=diff.get) == expected_tile
    assert diff[expected_tile] > 0.9 * sum(diff.values())
    t = tile(ga, expected_tile)
    changed = np.argwhere(np.abs(t - tile(gb, expected_tile)).sum(-1) > 30)
    centre = changed.mean(axis=0)
    assert abs(centre[1] - RES / 2) < RES * 0.15                       # centred horizontally


def test_synthetic_panorama_is_deterministic_and_cached():
    o, streets = _street_corner()
    f = MapFeatures("t", streets, [Place("Bank Nord", "bank", *offset_m(o, 10, 10))])
    a = SyntheticPanoramas(f, width=512, height=256)
    b = SyntheticPanoramas(f, width=512, height=256)
    pa = a.panorama(o)
    assert pa.shape == (256, 512, 3) and np.array_equal(pa, b.panorama(o))
    assert a.panorama(o) is pa


def test_map_view_png_and_svg():
    o, streets = _street_corner()
    f = MapFeatures("t", streets, [Place("Bank Nord", "bank", *offset_m(o, 10, 10))])
    rail = [offset_m(o, 0, -40), o, offset_m(o, 40, 0)]
    im = render_map_png(f, rail_positions=rail, visited=rail[:2], position=o, heading=90, size=300)
    assert im.size == (300, 300)
    arr = np.asarray(im)
    assert ((arr == (220, 40, 40)).all(-1)).any()          # the agent marker is drawn
    svg = render_map_svg(f, rail_positions=rail, visited=rail[:2], position=o, heading=90)
    assert svg.startswith("<svg") and "Bank Nord" in svg and "OpenStreetMap contributors" in svg
    assert svg.count('class="step"') == 2 and "rotate(90.0)" in svg


def test_ood_set_uses_a_different_panorama_style():
    from game.virl.datasets import load_bundled

    a, b = load_bundled("helsinki"), load_bundled("helsinki-ood")
    assert (a.panorama_style, b.panorama_style) == ("day", "dusk")
    o, streets = _street_corner()
    f = MapFeatures("t", streets, [])
    day = SyntheticPanoramas(f, width=256, height=128).panorama(o)
    dusk = SyntheticPanoramas(f, width=256, height=128, style="dusk").panorama(o)
    assert np.abs(day.astype(int) - dusk.astype(int)).mean() > 20
    with pytest.raises(ValueError, match="unknown panorama style"):
        SyntheticPanoramas(f, style="noir")
