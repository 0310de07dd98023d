"""Synthetic "other cities" for V-IRL: route sets that share nothing with the evaluation routes
but the street-navigation skill itself.

A training city is the bundled Helsinki street graph turned into a different town: rotated about
its centre by an angle, optionally mirrored (so headings, compass words and left/right turn
patterns all change), and every named place renamed from a seeded syllable generator (so no
landmark name of the evaluation routes appears). Routes are then drawn on it with V-IRL's
collection rules (`game.virl.generate.generate_routes`), so prompts, rails and golden actions
follow exactly the same code as the evaluation routes.

The tiny-checkpoint pipeline's V-IRL-L base (`models.train.pipeline`) learns direction knowledge
here, under both action spaces, without ever seeing the evaluation's OOD configuration (the
relative action space on the Helsinki routes).

    city = training_city(0)            # VirlData: name "city:0", ~600 routes, exact pano mapping
    len(city.routes), city.routes[0].milestones[0]
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

from .datasets import VirlData, _bundled_features
from .mapdata import MapFeatures, Place, Street
from .routes import PanoMapping, exact_mapping, parse_route

# (rotation degrees, mirrored) of the training cities; none is the identity
CITY_TRANSFORMS: tuple[tuple[float, bool], ...] = (
    (37.0, False), (101.0, True), (163.0, False), (222.0, True), (283.0, False), (331.0, True),
    (71.0, True), (193.0, False))
_SYLLABLES = ("ka", "lo", "mi", "ra", "ve", "su", "to", "ni", "pa", "le", "do", "ri", "an", "el", "or",
              "us", "ba", "ke", "mo", "ta", "vi", "no", "sa", "ju", "ha", "fe", "gi", "ro", "la", "zu")
_TYPE_WORDS = {"restaurant": ("Restaurant", "Kitchen", "Grill", "Diner"), "cafe": ("Cafe", "Coffee"),
               "bar": ("Bar", "Pub", "Tavern"), "bank": ("Bank",), "bakery": ("Bakery",),
               "supermarket": ("Market",), "convenience_store": ("Mini Market", "Corner Shop"),
               "pharmacy": ("Pharmacy",), "hospital": ("Clinic",), "spa": ("Spa",), "school": ("School",),
               "library": ("Library",), "park": ("Park",), "lodging": ("Hotel", "Hostel"),
               "laundry": ("Laundry",), "movie_theater": ("Cinema",), "book_store": ("Books",),
               "clothing_store": ("Fashion", "Boutique"), "jewelry_store": ("Jewellers",), "gym": ("Gym",)}


def _name(rng: random.Random, kind: str) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    suffix = _TYPE_WORDS.get(kind)
    if suffix is None:
        return word
    return f"{word} {rng.choice(suffix)}" if rng.random() < 0.7 else f"{rng.choice(suffix)} {word}"


def transform_city(features: MapFeatures, angle: float, mirror: bool, seed: int, name: str) -> MapFeatures:
    """`features` rotated by `angle` degrees (clockwise, about its centre), mirrored east-west
    first when `mirror`, every place renamed (distinct names, seeded, none of the source's)."""
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)

    def move(lat: float, lng: float) -> tuple[float, float]:
        x, y = features.to_xy((lat, lng))
        if mirror:
            x = -x
        return features.to_latlng((x * cos + y * sin, -x * sin + y * cos))

    rng = random.Random(f"virl-city:{seed}")
    taken = {p.name for p in features.places}           # never reuse one of the source map's names
    names: set[str] = set()
    places = []
    for p in features.places:
        new = _name(rng, p.type)
        while new in names or new in taken:
            new = _name(rng, p.type)
        names.add(new)
        places.append(Place(new, p.type, *move(p.lat, p.lng)))
    streets = [Street(s.name, tuple(move(a, b) for a, b in s.coords)) for s in features.streets]
    return MapFeatures(name, streets, places, features.attribution)


@lru_cache(maxsize=len(CITY_TRANSFORMS))
def training_city(index: int) -> VirlData:
    """Training city `index` (0..len(CITY_TRANSFORMS)-1) as a route set, built once per process."""
    from .generate import generate_routes

    if not 0 <= index < len(CITY_TRANSFORMS):
        raise IndexError(f"training city {index} out of range (0..{len(CITY_TRANSFORMS) - 1})")
    angle, mirror = CITY_TRANSFORMS[index]
    name = f"city:{index}"
    features = transform_city(_bundled_features("helsinki.map.json.gz"), angle, mirror, index, name)
    records = generate_routes(features, seed=100 + index, prefix=f"city{index}-", region=name)
    routes = [parse_route(r, i, name) for i, r in enumerate(records)]
    mapping = PanoMapping([(k[0], k[1], v) for r in routes for k, v in exact_mapping(r).items()])
    return VirlData(name, routes, mapping, features, None,
                    f"synthetic training city {index}: Helsinki's streets rotated {angle:g} deg"
                    f"{', mirrored' if mirror else ''}, every place renamed")
