"""V-IRL speed: rail steps per second (oracle walk, verifier included), rail construction, and the
2×2 street-view grid render time (synthetic panorama cached, as during interactive play)."""
from __future__ import annotations

import math

import numpy as np

from run import report, timed

from game.virl.datasets import load_bundled
from game.virl.episode import start_episode
from game.virl.render import grid, grid_headings, street_view_grid
from game.virl.verifier import verify


def run() -> None:
    data = load_bundled("helsinki")
    routes = data.routes

    # rail steps/s: oracle walks over many routes; baseline = the bare regex+json parse per reply
    counter = {"i": 0}

    def walk():
        i = counter["i"] = (counter["i"] + 1) % len(routes)
        ep = start_episode(routes, seed=i, route_idx=i, mapping=data.mapping)
        n = 0
        while not ep.done:
            ep.step(ep.oracle_reply())
            n += 1
        return n

    steps = sum(walk() for _ in range(50)) / 50
    per_walk = timed(walk, min_time=0.5)
    reply = start_episode(routes, seed=0, route_idx=0).oracle_reply()
    t_verify = timed(lambda: verify(reply, "forward()", "No landmarks nearby"), min_time=0.2)
    report("virl rail steps/s (episode incl. rail build)", steps / per_walk, "steps/s",
           baseline=1.0 / t_verify, baseline_name="verify() alone")

    ep = start_episode(routes, seed=1, route_idx=1, mapping=data.mapping)
    entry = ep.entry
    pano, rot = data.panorama(entry)               # first render fills the cache
    t_pano = timed(lambda: data._synthetic._render(data.features.to_xy(entry.position)), min_time=0.5)
    report("virl synthetic panorama render (uncached)", t_pano * 1000, "ms", higher_is_better=False)
    t_grid = timed(lambda: street_view_grid(pano, entry.heading, rotation=rot), min_time=1.0)
    t_naive = timed(lambda: _naive_grid(pano, entry.heading, rot), min_time=1.0)
    report("virl 2x2 street-view grid (2405 px)", t_grid * 1000, "ms", target="< 150 ms",
           baseline=t_naive * 1000, baseline_name="2-D per-pixel remap", higher_is_better=False)


def _naive_grid(pano, heading, rotation, size=640, fov=90.0):
    """Baseline: a textbook full 2-D bilinear remap per crop (no separable pass)."""
    h, w = pano.shape[:2]
    f = (size / 2) / math.tan(math.radians(fov) / 2)
    c = np.arange(size) - size / 2 + 0.5
    x, y = np.meshgrid(c, -c)
    lon = np.degrees(np.arctan2(x, f))
    lat = np.degrees(np.arctan2(y, np.hypot(x, f)))
    tiles = []
    for hd in grid_headings(heading):
        u = (lon + hd + rotation) / 360.0 * w
        v = np.clip((90.0 - lat) / 180.0 * h, 0, h - 1.001)
        u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
        fu, fv = (u - u0)[..., None], (v - v0)[..., None]
        u0 %= w
        u1 = (u0 + 1) % w
        out = (pano[v0, u0] * (1 - fu) * (1 - fv) + pano[v0, u1] * fu * (1 - fv)
               + pano[v0 + 1, u0] * (1 - fu) * fv + pano[v0 + 1, u1] * fu * fv)
        tiles.append(out.astype(np.uint8))
    return grid(tiles)
