"""Street views: perspective crops from an equirectangular panorama and the reference's 2×2 grid
(spec §1.3), with numpy and Pillow only.

Geometry: the compass heading h sits at horizontal fraction ((h + rotation) mod 360) / 360 of the
panorama (rotation from `<pano>.metadata.json`), the horizon at the vertical centre; crops are
pinhole views (FOV 90, pitch 0, 640 × 640 by default) sampled bilinearly with horizontal
wrap-around (the reference remaps bicubically with OpenCV; pixels are not part of conformance),
then resized to `resolution` (1200) bilinearly (OpenCV resize's default). The grid pastes the crops at
h−135, h−45, h+45, h+135 as top-left, top-right, bottom-left, bottom-right with 5 px black gaps
on a (2·resolution + 5)² canvas: TL = back-left, TR = front-left, BL = front-right, BR = back-right.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

GRID_OFFSETS = (-135, -45, 45, 135)      # TL, TR, BL, BR
GRID_GAP = 5
CROP_SIZE = 640
CROP_FOV = 90.0
RESOLUTION = 1200


def grid_headings(heading: float) -> list[float]:
    """Crop headings for the 2×2 grid, in tile order TL, TR, BL, BR."""
    return [(heading + o) % 360 for o in GRID_OFFSETS]


def tile_for_offset(offset: float) -> str | None:
    """Which tile shows a bearing offset (degrees from the heading), or None on a seam."""
    o = offset % 360
    for name, centre in (("TL", 225), ("TR", 315), ("BL", 45), ("BR", 135)):
        if abs(((o - centre + 180) % 360) - 180) < 45:
            return name
    return None


@lru_cache(maxsize=16)
def _base_maps(pano_h: int, pano_w: int, size: int, fov: float):
    """Maps for a pitch-0 crop at heading 0. The longitude of a pinhole ray depends on its column
    only, so sampling splits into a horizontal pass (per column) and a vertical one (per pixel)."""
    f = (size / 2) / math.tan(math.radians(fov) / 2)
    c = np.arange(size, dtype=np.float64) - size / 2 + 0.5
    du = (np.degrees(np.arctan2(c, f)) / 360.0 * pano_w).astype(np.float64)      # per column
    x, y = np.meshgrid(c, -c)            # x right, y up
    lat = np.degrees(np.arctan2(y, np.hypot(x, f)))
    v = np.clip((90.0 - lat) / 180.0 * pano_h, 0, pano_h - 1.001)
    lo = int(np.floor(v.min()))
    hi = int(np.floor(v.max())) + 2
    v0 = np.floor(v).astype(np.int64)
    dv = (v - v0).astype(np.float32)[..., None]
    cols = np.broadcast_to(np.arange(size), (size, size))
    idx0 = (v0 - lo) * size + cols       # flat index into the (hi-lo) × size strip
    return du, lo, hi, idx0, idx0 + size, dv


def perspective(pano: np.ndarray, heading: float, *, rotation: float = 0.0, fov: float = CROP_FOV,
                size: int = CROP_SIZE) -> np.ndarray:
    """A size × size pinhole view (pitch 0) of an H × W × 3 uint8 equirectangular panorama."""
    if pano.ndim != 3 or pano.shape[2] != 3:
        raise ValueError("panorama must be an H × W × 3 array")
    h, w = pano.shape[:2]
    du, lo, hi, idx0, idx1, dv = _base_maps(h, w, size, float(fov))
    u = du + ((heading + rotation) % 360.0) / 360.0 * w
    u0f = np.floor(u)
    fu = (u - u0f).astype(np.float32)[None, :, None]
    u0 = u0f.astype(np.int64) % w
    strip = pano[lo:hi]
    cols = strip[:, u0] * (1 - fu) + strip[:, (u0 + 1) % w] * fu     # (hi-lo) × size × 3
    flat = cols.reshape(-1, 3)
    out = flat[idx0] * (1 - dv) + flat[idx1] * dv
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def grid(tiles: list[np.ndarray], *, resolution: int = RESOLUTION, gap: int = GRID_GAP) -> np.ndarray:
    """Paste four tiles (TL, TR, BL, BR) resized to resolution² on a black canvas."""
    if len(tiles) != 4:
        raise ValueError("the grid needs exactly four tiles")
    side = 2 * resolution + gap
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    spots = ((0, 0), (0, resolution + gap), (resolution + gap, 0), (resolution + gap, resolution + gap))
    for tile, (r, c) in zip(tiles, spots):
        if tile.shape[:2] != (resolution, resolution):
            tile = np.asarray(Image.fromarray(tile).resize((resolution, resolution), Image.Resampling.BILINEAR))
        canvas[r:r + resolution, c:c + resolution] = tile
    return canvas


def street_view_grid(pano: np.ndarray, heading: float, *, rotation: float = 0.0,
                     resolution: int = RESOLUTION, size: int = CROP_SIZE, fov: float = CROP_FOV) -> np.ndarray:
    """The VL observation: the reference's 2×2 grid for a panorama and heading."""
    tiles = [perspective(pano, h, rotation=rotation, fov=fov, size=size) for h in grid_headings(heading)]
    return grid(tiles, resolution=resolution)


class StreetViewFolder:
    """Released panoramas: `<pano>.jpg` (equirectangular) + `<pano>.metadata.json` (`rotation`)."""

    def __init__(self, directory: str | Path, cache_size: int = 8):
        self.directory = Path(directory)
        self._cache: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._cache_size = cache_size

    def load(self, pano_id: str) -> tuple[np.ndarray, float]:
        if pano_id in self._cache:
            self._cache.move_to_end(pano_id)
            return self._cache[pano_id]
        if "/" in pano_id or "\\" in pano_id or pano_id.startswith("."):
            raise ValueError(f"bad panorama id {pano_id!r}")
        jpg = self.directory / f"{pano_id}.jpg"
        meta = self.directory / f"{pano_id}.metadata.json"
        try:
            with Image.open(jpg) as im:
                arr = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{jpg}: panorama not found") from None
        except OSError as exc:
            raise ValueError(f"{jpg}: unreadable image ({exc})") from None
        rotation = 0.0
        if meta.exists():
            try:
                rotation = float(json.loads(meta.read_text(encoding="utf-8")).get("rotation", 0.0))
            except (ValueError, AttributeError, TypeError) as exc:
                raise ValueError(f"{meta}: malformed metadata ({exc})") from None
        self._cache[pano_id] = (arr, rotation)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arr, rotation
