"""Top-down map of a V-IRL neighbourhood, synchronised with an episode: streets, named places,
the route's rail, the steps taken so far, and the current position and heading. Drawn from the
bundled map features only (no tiles from the internet), as a PNG (Pillow) or an SVG string.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .mapdata import M_PER_DEG_LAT, MapFeatures
from .panorama import font as _font

BG = (246, 244, 238)
STREET = (255, 255, 255)
STREET_EDGE = (200, 196, 188)
PLACE = (150, 90, 40)
ROUTE = (60, 110, 220)
VISITED = (30, 150, 80)
AGENT = (220, 40, 40)


@dataclass
class _Frame:
    lat0: float
    lng0: float
    scale: float          # px per metre
    kx: float             # metres per degree of longitude
    height: int
    pad: float
    min_x: float
    min_y: float

    def px(self, latlng) -> tuple[float, float]:
        x = (latlng[1] - self.lng0) * self.kx
        y = (latlng[0] - self.lat0) * M_PER_DEG_LAT
        return (self.pad + (x - self.min_x) * self.scale, self.height - self.pad - (y - self.min_y) * self.scale)


def _frame(points: Sequence, size: int, margin_m: float) -> _Frame:
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lat0, lng0 = float(arr[:, 0].mean()), float(arr[:, 1].mean())
    kx = M_PER_DEG_LAT * math.cos(math.radians(lat0))
    xs, ys = (arr[:, 1] - lng0) * kx, (arr[:, 0] - lat0) * M_PER_DEG_LAT
    min_x, max_x = xs.min() - margin_m, xs.max() + margin_m
    min_y, max_y = ys.min() - margin_m, ys.max() + margin_m
    span = max(max_x - min_x, max_y - min_y, 1.0)
    pad = 10.0
    scale = (size - 2 * pad) / span
    # centre the shorter side
    min_x -= (span - (max_x - min_x)) / 2
    min_y -= (span - (max_y - min_y)) / 2
    return _Frame(lat0, lng0, scale, kx, size, pad, min_x, min_y)


def _layers(features, rail_positions, visited, position, size, margin_m):
    focus = list(rail_positions) or ([position] if position is not None else [])
    if not focus and features is not None:
        b = features.bounds
        focus = [(b[0], b[1]), (b[2], b[3])]
    if not focus:
        raise ValueError("nothing to draw")
    return _frame(focus, size, margin_m)


def render_map_png(features: MapFeatures | None = None, *, rail_positions: Sequence = (),
                   visited: Sequence = (), position=None, heading: float | None = None,
                   size: int = 720, margin_m: float = 45.0, attribution: str | None = None,
                   walks: Sequence = ()) -> Image.Image:
    """The map as a Pillow image (RGB). `visited` are the positions reached so far, in order;
    `walks` are other walkers' paths, `(positions, rgb)` each (e.g. the models' walks), drawn
    slightly offset so that several walks along one street stay apart."""
    fr = _layers(features, rail_positions, visited, position, size, margin_m)
    im = Image.new("RGB", (size, size), BG)
    d = ImageDraw.Draw(im)
    font = _font(max(12, size // 36))
    if features is not None:
        width = max(2, int(14 * fr.scale))
        for s in features.streets:
            pts = [fr.px(c) for c in s.coords]
            d.line(pts, fill=STREET_EDGE, width=width + 2, joint="curve")
        for s in features.streets:
            d.line([fr.px(c) for c in s.coords], fill=STREET, width=width, joint="curve")
        shown = [(fr.px((p.lat, p.lng)), p.name) for p in features.places]
        shown = [((x, y), name) for (x, y), name in shown if -20 <= x <= size + 20 and -20 <= y <= size + 20]
        for (x, y), _ in shown:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=PLACE)
        for _xy, name, box in _labels(d, shown, rail_positions and [fr.px(p) for p in rail_positions], font, size):
            d.text((box[0], box[1]), name, fill=(90, 60, 30), font=font, stroke_width=2, stroke_fill=BG)
    if rail_positions:
        d.line([fr.px(p) for p in rail_positions], fill=ROUTE, width=4)
        for p in rail_positions:
            x, y = fr.px(p)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], outline=ROUTE, width=2)
    for k, (positions, colour) in enumerate(walks):
        off = 4 * (k + 1) * (1 if k % 2 == 0 else -1)
        pts = [(x + off, y + off) for x, y in (fr.px(p) for p in positions)]
        if len(pts) > 1:
            d.line(pts, fill=tuple(colour), width=4)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=tuple(colour), outline=(255, 255, 255))
    if visited:
        pts = [fr.px(p) for p in visited]
        if len(pts) > 1:
            d.line(pts, fill=VISITED, width=5)
        for x, y in pts:
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=VISITED)
    if position is not None:
        x, y = fr.px(position)
        h = math.radians(heading or 0.0)
        tip = (x + 16 * math.sin(h), y - 16 * math.cos(h))
        left = (x + 9 * math.sin(h - 2.5), y - 9 * math.cos(h - 2.5))
        right = (x + 9 * math.sin(h + 2.5), y - 9 * math.cos(h + 2.5))
        d.polygon([tip, left, right], fill=AGENT, outline=(255, 255, 255))
    text = attribution or (features.attribution if features is not None else "")
    if text:
        d.rectangle([0, size - 18, size, size], fill=(255, 255, 255))
        d.text((6, size - 16), text, fill=(60, 60, 60), font=_font(12))
    return im


def _labels(d: ImageDraw.ImageDraw, places, rail_px, font, size: int):
    """Place names that do not overlap one another: nearest the route first (its landmarks), each
    to the right, left, above or below its dot, whichever is free and on the map; a name with no
    free place is left out (its dot stays)."""
    def near(p):
        (x, y), _ = p
        return min(((x - rx) ** 2 + (y - ry) ** 2 for rx, ry in rail_px), default=0.0)

    route = []   # points along the route: a name does not cover it
    for (ax, ay), (bx, by) in zip(rail_px or [], (rail_px or [])[1:]):
        steps = max(1, int(math.hypot(bx - ax, by - ay) // 6))
        route += [(ax + (bx - ax) * k / steps, ay + (by - ay) * k / steps) for k in range(steps + 1)]
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for (x, y), name in sorted(places, key=near):
        left, top, right, bottom = d.textbbox((0, 0), name, font=font)
        w, h = right - left, bottom - top
        for bx, by in ((x + 6, y - h / 2 - top), (x - 6 - w, y - h / 2 - top), (x - w / 2, y - 6 - h - top),
                       (x - w / 2, y + 6 - top)):
            box = (bx + left - 2, by + top - 2, bx + right + 2, by + bottom + 2)
            if box[0] < 0 or box[2] > size or box[1] < 0 or box[3] > size - 20:
                continue
            if any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in placed):
                continue
            if any(box[0] <= rx <= box[2] and box[1] <= ry <= box[3] for rx, ry in route):
                continue
            placed.append(box)
            out.append(((x, y), name, (bx, by)))
            break
    return out


def render_map_svg(features: MapFeatures | None = None, *, rail_positions: Sequence = (),
                   visited: Sequence = (), position=None, heading: float | None = None,
                   size: int = 720, margin_m: float = 45.0, attribution: str | None = None) -> str:
    """The same map as a standalone SVG document."""
    fr = _layers(features, rail_positions, visited, position, size, margin_m)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
           f'viewBox="0 0 {size} {size}" font-family="sans-serif">',
           f'<rect width="{size}" height="{size}" fill="rgb{BG}"/>']

    def pl(points):
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in (fr.px(p) for p in points))

    if features is not None:
        width = max(2.0, 14 * fr.scale)
        for s in features.streets:
            out.append(f'<polyline points="{pl(s.coords)}" fill="none" stroke="rgb{STREET_EDGE}" '
                       f'stroke-width="{width + 2:.1f}" stroke-linecap="round" stroke-linejoin="round">'
                       f'<title>{escape(s.name)}</title></polyline>')
        for s in features.streets:
            out.append(f'<polyline points="{pl(s.coords)}" fill="none" stroke="rgb{STREET}" '
                       f'stroke-width="{width:.1f}" stroke-linecap="round" stroke-linejoin="round"/>')
        for p in features.places:
            x, y = fr.px((p.lat, p.lng))
            if -20 <= x <= size + 20 and -20 <= y <= size + 20:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="rgb{PLACE}"/>'
                           f'<text x="{x + 5:.1f}" y="{y + 4:.1f}" font-size="11" fill="rgb(90,60,30)">'
                           f'{escape(p.name)}</text>')
    if rail_positions:
        out.append(f'<polyline class="route" points="{pl(rail_positions)}" fill="none" stroke="rgb{ROUTE}" stroke-width="4"/>')
    if visited:
        out.append(f'<polyline class="visited" points="{pl(visited)}" fill="none" stroke="rgb{VISITED}" stroke-width="5"/>')
        for x, y in (fr.px(p) for p in visited):
            out.append(f'<circle class="step" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="rgb{VISITED}"/>')
    if position is not None:
        x, y = fr.px(position)
        out.append(f'<g class="agent" transform="translate({x:.1f},{y:.1f}) rotate({(heading or 0) % 360:.1f})">'
                   f'<polygon points="0,-16 7,7 -7,7" fill="rgb{AGENT}" stroke="white"/></g>')
    text = attribution or (features.attribution if features is not None else "")
    if text:
        out.append(f'<text x="6" y="{size - 6}" font-size="12" fill="rgb(60,60,60)">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def episode_map(episode, features: MapFeatures | None = None, *, fmt: str = "png", **kw):
    """The map for an episode's current state (route, steps taken so far, position, heading)."""
    rail = episode.rail
    args = dict(rail_positions=[e.position for e in rail.entries],
                visited=[rail.entries[i].position for i in episode.visited],
                position=episode.entry.position, heading=episode.entry.heading, **kw)
    if features is None:
        args.setdefault("attribution", None)
    return render_map_svg(features, **args) if fmt == "svg" else render_map_png(features, **args)
