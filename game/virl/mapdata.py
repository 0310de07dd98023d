"""Compact map features for offline V-IRL: street centre-lines and named places, as JSON.

Form (`*.map.json.gz`): `{"format": "sftvsrl-virl-map", "version": 1, "name", "attribution",
"streets": [{"name", "coords": [[lat, lng], ...]}], "places": [{"name", "type", "lat", "lng"}]}`.
Coordinates are kept to 6 decimals (~0.1 m). Projection to local metres is equirectangular
around the map's centre, accurate to centimetres over a neighbourhood.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .routes import RouteDataError, _write_text, read_json

MAP_FORMAT = "sftvsrl-virl-map"
OSM_ATTRIBUTION = "© OpenStreetMap contributors (ODbL)"
M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class Place:
    name: str
    type: str
    lat: float
    lng: float


@dataclass(frozen=True)
class Street:
    name: str
    coords: tuple[tuple[float, float], ...]


class MapFeatures:
    """Streets and places of one neighbourhood, with a local metric frame and segment arrays."""

    def __init__(self, name: str, streets: list[Street], places: list[Place],
                 attribution: str = OSM_ATTRIBUTION):
        self.name = name
        self.streets = streets
        self.places = places
        self.attribution = attribution
        # the frame depends on the streets only, so adding a place changes nothing else
        pts = [c for s in streets for c in s.coords] or [(p.lat, p.lng) for p in places]
        if not pts:
            raise ValueError("empty map")
        arr = np.array(pts)
        self.origin = (float(arr[:, 0].mean()), float(arr[:, 1].mean()))
        self._kx = M_PER_DEG_LAT * math.cos(math.radians(self.origin[0]))
        segs: list[np.ndarray] = []
        for s in streets:
            xy = self.to_xy_array(np.array(s.coords))
            segs.extend(np.concatenate([xy[:-1], xy[1:]], axis=1))
        self.segments = np.array(segs, dtype=np.float64).reshape(-1, 4)   # x1 y1 x2 y2
        self.place_xy = self.to_xy_array(np.array([(p.lat, p.lng) for p in places]).reshape(-1, 2))

    # ---- projection -----------------------------------------------------------------------
    def to_xy(self, latlng) -> tuple[float, float]:
        return ((latlng[1] - self.origin[1]) * self._kx, (latlng[0] - self.origin[0]) * M_PER_DEG_LAT)

    def to_xy_array(self, latlng: np.ndarray) -> np.ndarray:
        latlng = np.asarray(latlng, dtype=np.float64).reshape(-1, 2)
        return np.stack([(latlng[:, 1] - self.origin[1]) * self._kx,
                         (latlng[:, 0] - self.origin[0]) * M_PER_DEG_LAT], axis=1)

    def to_latlng(self, xy) -> tuple[float, float]:
        return (self.origin[0] + xy[1] / M_PER_DEG_LAT, self.origin[1] + xy[0] / self._kx)

    # ---- queries --------------------------------------------------------------------------
    def segments_near(self, xy, radius: float) -> np.ndarray:
        s = self.segments
        x, y = xy
        lo_x = np.minimum(s[:, 0], s[:, 2]) - radius
        hi_x = np.maximum(s[:, 0], s[:, 2]) + radius
        lo_y = np.minimum(s[:, 1], s[:, 3]) - radius
        hi_y = np.maximum(s[:, 1], s[:, 3]) + radius
        return s[(lo_x <= x) & (x <= hi_x) & (lo_y <= y) & (y <= hi_y)]

    def places_near(self, xy, radius: float) -> list[tuple[Place, float, float]]:
        """(place, distance m, bearing deg) for places within radius, nearest first."""
        if not self.places:
            return []
        d = self.place_xy - np.asarray(xy, dtype=np.float64)
        dist = np.hypot(d[:, 0], d[:, 1])
        out = []
        for i in np.flatnonzero(dist <= radius):
            bearing = math.degrees(math.atan2(d[i, 0], d[i, 1])) % 360.0
            out.append((self.places[int(i)], float(dist[i]), bearing))
        return sorted(out, key=lambda t: t[1])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lat, min_lng, max_lat, max_lng)."""
        pts = np.array([c for s in self.streets for c in s.coords] + [(p.lat, p.lng) for p in self.places])
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))

    # ---- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": MAP_FORMAT, "version": 1, "name": self.name, "attribution": self.attribution,
                "streets": [{"name": s.name, "coords": [[round(a, 6), round(b, 6)] for a, b in s.coords]}
                            for s in self.streets],
                "places": [{"name": p.name, "type": p.type, "lat": round(p.lat, 6), "lng": round(p.lng, 6)}
                           for p in self.places]}

    def save(self, path: str | Path) -> None:
        _write_text(Path(path), json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")))

    @classmethod
    def from_json(cls, data, source: str = "<map>") -> "MapFeatures":
        if not isinstance(data, dict) or data.get("format") != MAP_FORMAT:
            raise RouteDataError(f"{source}: not a {MAP_FORMAT} file")
        try:
            streets = [Street(str(s["name"]), tuple((float(a), float(b)) for a, b in s["coords"]))
                       for s in data["streets"]]
            places = [Place(str(p["name"]), str(p.get("type", "")), float(p["lat"]), float(p["lng"]))
                      for p in data["places"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RouteDataError(f"{source}: malformed map features ({exc})") from None
        return cls(str(data.get("name", "")), streets, places, str(data.get("attribution", OSM_ATTRIBUTION)))

    @classmethod
    def load(cls, path: str | Path) -> "MapFeatures":
        return cls.from_json(read_json(path), str(path))
