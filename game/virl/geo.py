"""Geodesy for V-IRL: distances, bearings, compass and relative-direction words, interpolation.

Owns every number-to-word rule of the spec that depends on geometry: the geodesic distance used
for the rail thresholds (WGS-84, as geopy's `geodesic`), the haversine distance used for the
panorama lookup (R = 6371 km), the initial bearing, the 8 compass words and the 8 relative words.
"""
from __future__ import annotations

import math

from geopy.distance import geodesic as _geodesic

EARTH_RADIUS_KM = 6371.0

COMPASS_WORDS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")
RELATIVE_WORDS = ("front", "right front", "right", "right behind", "behind", "left behind", "left",
                  "left front")

LatLng = tuple[float, float]


def geodesic_m(a: LatLng, b: LatLng) -> float:
    """Geodesic (WGS-84) distance in metres, computed exactly as the reference does (geopy)."""
    return _geodesic(tuple(a), tuple(b)).meters


def haversine_m(a: LatLng, b: LatLng) -> float:
    """Great-circle distance in metres on a sphere of radius 6371 km (the panorama lookup's metric)."""
    lat1, lng1, lat2, lng2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * 1000.0 * math.asin(math.sqrt(min(1.0, h)))


def bearing_deg(a: LatLng, b: LatLng) -> float:
    """Initial compass bearing from a to b in degrees, 0 = north, clockwise, in [0, 360)."""
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlng = math.radians(b[1] - a[1])
    x = math.sin(dlng) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlng)
    return math.degrees(math.atan2(x, y)) % 360.0


def compass_word(bearing: float) -> str:
    """The nearest of the 8 compass words for a bearing in degrees."""
    return COMPASS_WORDS[int(((bearing % 360.0) + 22.5) // 45.0) % 8]


def relative_word(offset: float) -> str:
    """The nearest of the 8 relative words for a bearing offset (place bearing − heading), degrees."""
    return RELATIVE_WORDS[int(((offset % 360.0) + 22.5) // 45.0) % 8]


def relative_turn_word(d: int | float) -> str:
    """The reference's turn word for an *unwrapped* heading difference d (no ±180 wrap: a quirk)."""
    if d < -45:
        return "left"
    if d > 45:
        return "right"
    if d <= 0:
        return "slightly left"
    return "slightly right"


def interpolate(a: LatLng, b: LatLng, j: int, n: int) -> LatLng:
    """Linear lat/lng interpolation at fraction j/n from a to b (bit-exact with the reference)."""
    t = j / n
    return (a[0] * (1 - t) + b[0] * t, a[1] * (1 - t) + b[1] * t)


def offset_m(origin: LatLng, east_m: float, north_m: float) -> LatLng:
    """The point `east_m` metres east and `north_m` metres north of origin (local flat-earth)."""
    dlat = north_m / 111_320.0
    dlng = east_m / (111_320.0 * math.cos(math.radians(origin[0])))
    return (origin[0] + dlat, origin[1] + dlng)


