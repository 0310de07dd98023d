"""Synthetic street-view panoramas drawn from map features (no imagery needed).

For a position, the renderer casts rays through the street corridors (street centre-lines
buffered by `half_width` metres): where a ray leaves the corridor it meets a façade, drawn with a
height and colour hashed from the façade's location (so a building looks the same from every
position). Named places within `sign_radius` get a storefront sign with their name, centred on
their true compass bearing, so the grid crops show each landmark where the spec says it is.
Output: an H × W × 3 uint8 equirectangular image with rotation 0 (north at the left edge,
headings increasing to the right). Deterministic; results are cached per position.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..fonts import SANS_CONDENSED_BOLD, truetype

from .mapdata import MapFeatures

PANO_W, PANO_H = 2048, 1024
EYE_M = 2.5
SIGN_BOTTOM_M, SIGN_TOP_M = 3.2, 5.6
STYLES: dict[str, dict[str, Any]] = {
    # "day": the in-distribution look; "dusk": a different palette, light and sky for the
    # visual-OOD analogue (held-out streets rendered as if in another city)
    "day": {"facades": [(196, 170, 140), (172, 120, 96), (214, 200, 170), (150, 150, 158),
                        (200, 184, 120), (160, 110, 110), (230, 220, 205), (120, 128, 112)],
            "signs": [(24, 64, 140), (150, 24, 36), (20, 110, 60), (40, 40, 40), (120, 60, 10)],
            "sky": ((150, 190, 235), (220, 230, 245)), "ground": ((90, 92, 96), (130, 132, 136)),
            "heights": (12.0, 14.0)},
    "dusk": {"facades": [(92, 96, 120), (120, 84, 100), (70, 100, 110), (140, 120, 90),
                         (100, 70, 60), (60, 70, 90), (150, 140, 150), (80, 110, 80)],
             "signs": [(230, 200, 40), (220, 90, 20), (200, 40, 120), (20, 160, 180), (240, 240, 240)],
             "sky": ((40, 40, 90), (250, 150, 90)), "ground": ((60, 55, 60), (95, 85, 80)),
             "heights": (6.0, 10.0)},
}


def _hash01(*values) -> float:
    h = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64


def _point_segment_dist(px: np.ndarray, py: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest segment (points: any shape; segs: S × 4)."""
    if len(segs) == 0:
        return np.full(px.shape, np.inf)
    x1, y1, x2, y2 = (segs[:, i] for i in range(4))
    dx, dy = x2 - x1, y2 - y1
    ll = np.maximum(dx * dx + dy * dy, 1e-9)
    p_x, p_y = px[..., None], py[..., None]
    t = np.clip(((p_x - x1) * dx + (p_y - y1) * dy) / ll, 0.0, 1.0)
    return np.hypot(p_x - (x1 + t * dx), p_y - (y1 + t * dy)).min(axis=-1)


class SyntheticPanoramas:
    """Deterministic panoramas for any position of a `MapFeatures` neighbourhood."""

    def __init__(self, features: MapFeatures, *, width: int = PANO_W, height: int = PANO_H,
                 half_width: float = 9.0, max_range: float = 70.0, n_rays: int = 512,
                 sign_radius: float = 30.0, cache_size: int = 32, style: str = "day"):
        if style not in STYLES:
            raise ValueError(f"unknown panorama style {style!r} (have: {', '.join(STYLES)})")
        self.style = STYLES[style]
        self._facades = np.array(self.style["facades"], np.float32)
        self.features = features
        self.width, self.height = width, height
        self.half_width, self.max_range, self.n_rays = half_width, max_range, n_rays
        self.sign_radius = sign_radius
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._sky = self._background()

    def _background(self) -> np.ndarray:
        h, w = self.height, self.width
        rows = np.arange(h, dtype=np.float32)[:, None] / h
        (s0, s1), (g0, g1) = (np.array(c, np.float32) for c in self.style["sky"]), \
            (np.array(c, np.float32) for c in self.style["ground"])
        sky = s0 + (s1 - s0) * (rows[..., None] * 2)
        ground = g0 + (g1 - g0) * ((rows[..., None] - 0.5) * 2)
        img = np.where(rows[..., None] < 0.5, sky, ground)
        return np.broadcast_to(np.clip(img, 0, 255), (h, w, 3)).astype(np.uint8)

    def load(self, position) -> tuple[np.ndarray, float]:
        """(panorama, rotation) like a street-view folder, for a (lat, lng) position."""
        return self.panorama(position), 0.0

    def panorama(self, position) -> np.ndarray:
        key = (round(float(position[0]), 7), round(float(position[1]), 7))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        img = self._render(self.features.to_xy(key))
        img.setflags(write=False)
        self._cache[key] = img
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return img

    def _row(self, elevation_deg: np.ndarray | float):
        return (90.0 - np.asarray(elevation_deg)) / 180.0 * self.height

    def _render(self, xy) -> np.ndarray:
        w, h = self.width, self.height
        segs = self.features.segments_near(xy, self.max_range + self.half_width)
        # ray casting: first distance at which each ray leaves the street corridor
        az = np.arange(self.n_rays) * (360.0 / self.n_rays)
        steps = np.arange(1.0, self.max_range + 0.01, 1.0)
        sx = xy[0] + np.sin(np.radians(az))[:, None] * steps[None, :]
        sy = xy[1] + np.cos(np.radians(az))[:, None] * steps[None, :]
        corridor = _point_segment_dist(sx, sy, segs)
        outside = corridor > self.half_width
        hit = outside.any(axis=1)
        first = np.where(hit, outside.argmax(axis=1), len(steps) - 1)
        # refine the exit point between the last inside sample and the first outside one
        rows_i = np.arange(self.n_rays)
        prev = np.maximum(first - 1, 0)
        d_in, d_out = corridor[rows_i, prev], corridor[rows_i, first]
        frac = np.clip((self.half_width - d_in) / np.maximum(d_out - d_in, 1e-6), 0.0, 1.0)
        exit_m = np.where(first > 0, steps[prev] + frac, steps[first])
        inv = np.where(hit, 1.0 / exit_m, 0.0)                    # 0 = open street, no façade
        # per-column façade: inverse distance interpolated between neighbouring rays
        col_az = (np.arange(w) + 0.5) * 360.0 / w
        pos = col_az / (360.0 / self.n_rays)
        r0 = np.floor(pos).astype(int) % self.n_rays
        r1 = (r0 + 1) % self.n_rays
        t = pos - np.floor(pos)
        inv_col = np.where((inv[r0] > 0) & (inv[r1] > 0), inv[r0] * (1 - t) + inv[r1] * t,
                           np.where(t < 0.5, inv[r0], inv[r1]))
        d = np.where(inv_col > 0, 1.0 / np.maximum(inv_col, 1e-9), np.inf)
        hx = xy[0] + np.sin(np.radians(col_az)) * np.where(np.isfinite(d), d, 0)
        hy = xy[1] + np.cos(np.radians(col_az)) * np.where(np.isfinite(d), d, 0)
        cell = [(int(a // 12), int(b // 12)) for a, b in zip(hx, hy)]
        cache: dict = {}
        height_m = np.empty(w, np.float32)
        colour = np.empty((w, 3), np.float32)
        for i, c in enumerate(cell):
            if c not in cache:
                r = _hash01("facade", c)
                base, spread = self.style["heights"]
                cache[c] = (base + spread * r, self._facades[int(r * 1e6) % len(self._facades)])
            height_m[i], colour[i] = cache[c]
        finite = np.isfinite(d)
        dd = np.where(finite, d, 1.0)
        top = self._row(np.degrees(np.arctan2(height_m - EYE_M, dd)))
        bottom = self._row(np.degrees(np.arctan2(-EYE_M, dd)))
        rows = np.arange(h, dtype=np.float32)[:, None]
        mask = (rows >= top[None, :]) & (rows <= bottom[None, :]) & finite[None, :]
        shade = 0.82 + 0.18 * np.cos(np.radians(col_az - 135.0))       # sun from the south-east
        floors = ((np.floor((rows - top[None, :]) / np.maximum((bottom - top)[None, :] / 6, 1)) % 2) * 0.06)
        facade = colour[None, :, :] * (shade[None, :, None] - floors[..., None])
        img = np.where(mask[..., None], np.clip(facade, 0, 255), self._sky).astype(np.uint8)
        return self._draw_signs(img, xy)

    def _draw_signs(self, img: np.ndarray, xy) -> np.ndarray:
        places = self.features.places_near(xy, self.sign_radius)
        if not places:
            return img
        im = Image.fromarray(img)
        draw = ImageDraw.Draw(im)
        w = self.width
        for place, dist, bearing in reversed(places):           # nearest drawn last, on top
            dist = max(dist, 4.0)
            half = math.degrees(math.atan2(3.6, dist))            # a 7.2 m wide sign board
            top = float(self._row(math.degrees(math.atan2(SIGN_TOP_M - EYE_M, dist))))
            bot = float(self._row(math.degrees(math.atan2(SIGN_BOTTOM_M - EYE_M, dist))))
            x0 = (bearing - half) / 360.0 * w
            x1 = (bearing + half) / 360.0 * w
            signs = self.style["signs"]
            colour = tuple(signs[int(_hash01("sign", place.name) * 1e6) % len(signs)])
            text = place.name
            font = _fit_font(text, x1 - x0 - 8, bot - top - 6)
            for shift in (-w, 0, w):                                # wrap across the seam
                if x1 + shift < 0 or x0 + shift > w:
                    continue
                draw.rectangle([x0 + shift, top, x1 + shift, bot], fill=colour, outline=(250, 250, 250), width=2)
                cx, cy = (x0 + x1) / 2 + shift, (top + bot) / 2
                ink = (20, 20, 20) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 150 else (255, 255, 255)
                draw.text((cx, cy), text, fill=ink, font=font, anchor="mm")
        return np.asarray(im)


def font(size: int):
    """The bundled DejaVu Sans Condensed Bold (Latin, Nordic letters ä, ö …)."""
    return truetype(SANS_CONDENSED_BOLD, size)


def _fit_font(text: str, max_w: float, max_h: float):
    size = max(8, int(min(max_h, 60)))
    while size > 8:
        f = font(size)
        x0, _, x1, _ = f.getbbox(text)
        if x1 - x0 <= max_w:
            return f
        size = int(size * 0.85)
    return font(8)
