"""Synthetic training cities for V-IRL: route sets that share nothing with the evaluation routes
but the street-navigation skill itself.

Owns the cities of the tiny-checkpoint pipeline's V-IRL-L base corpus (`models.train.pipeline`).
Training city `i` (`training_city(i)`, `i` in 0..`N_CITIES`-1, built once per process) is one of:

- **a transformed Helsinki** (even `i`): the bundled Helsinki street graph rotated about its centre
  by a seeded angle in 20..340° (never near the identity), mirrored east-west in half of them, so
  headings, compass words and left/right turn patterns all change;
- **a generated street grid** (odd `i`, `grid_city`): a jittered, gently warped grid at a seeded
  orientation and block size (35–90 m), some blocks merged, a few diagonal streets, and named
  places along both sides of every street (V-IRL's destination types and landmark-only kinds).

Every place and street of every city is named afresh by `game.virl.names.NameGenerator` (its own
seed per city, never a name or a distinctive word of the Helsinki map), so a model that walks these
cities must copy names out of the instruction: it cannot recall them. Routes are drawn with V-IRL's
collection rules (`game.virl.generate.generate_routes`), so prompts, rails and golden actions follow
exactly the same code as the evaluation routes. No Helsinki route (same names) can occur, hence
never the rule-OOD configuration (the relative action space on the Helsinki routes).

    city = training_city(0)            # VirlData: name "city:0", ~300 routes, exact pano mapping
    len(city.routes), city.routes[0].milestones[0]
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

from .datasets import VirlData, _bundled_features
from .generate import generate_routes
from .mapdata import MapFeatures, Place, Street
from .names import NameGenerator, helsinki_names
from .routes import PanoMapping, exact_mapping, parse_route

N_CITIES = 96                 # the pool of training cities (half transformed Helsinki, half grids)
ROUTES_PER_CITY = 300         # routes drawn per city (V-IRL's rules; fewer where the map has fewer)

# place kinds of the generated grids: V-IRL's destination types (weighted roughly as a city centre
# has them) and landmark-only kinds (OSM `key:value`, as the bundled map keeps them)
_GRID_KINDS = (("restaurant", 24), ("cafe", 8), ("bar", 7), ("clothing_store", 8), ("lodging", 3),
               ("bank", 2), ("jewelry_store", 2), ("spa", 2), ("convenience_store", 1), ("book_store", 1),
               ("bakery", 1), ("pharmacy", 1), ("supermarket", 1), ("library", 1), ("gym", 1),
               ("movie_theater", 1), ("laundry", 1), ("school", 1), ("park", 1), ("hospital", 1),
               ("tourism:artwork", 6), ("shop:hairdresser", 4), ("shop:yes", 4), ("shop:optician", 2),
               ("amenity:bicycle_rental", 2), ("shop:shoes", 2), ("shop:furniture", 2), ("amenity:atm", 1),
               ("amenity:embassy", 1), ("shop:kiosk", 1), ("amenity:theatre", 1), ("tourism:museum", 1))


def city_kind(index: int) -> str:
    """`helsinki` (a transformed Helsinki graph) for even indices, `grid` for odd ones."""
    return "helsinki" if index % 2 == 0 else "grid"


def city_transform(index: int) -> tuple[float, bool]:
    """(rotation degrees in 20..340, mirrored) of transformed-Helsinki city `index`."""
    rng = random.Random(f"virl-city-transform:{index}")
    return round(rng.uniform(20.0, 340.0), 1), rng.random() < 0.5


def _rename(features: MapFeatures, gen: NameGenerator, name: str, move) -> MapFeatures:
    """`features` with every point moved by `move((lat, lng))`, every place and street renamed
    (a street keeps one name across its pieces)."""
    street_names: dict[str, str] = {}
    streets = []
    for s in features.streets:
        new = street_names.setdefault(s.name, gen.street()) if s.name else ""
        streets.append(Street(new, tuple(move(c) for c in s.coords)))
    places = [Place(gen.place(p.type), p.type, *move((p.lat, p.lng))) for p in features.places]
    return MapFeatures(name, streets, places, features.attribution)


def transform_city(features: MapFeatures, angle: float, mirror: bool, seed, name: str) -> MapFeatures:
    """`features` rotated by `angle` degrees (clockwise, about its centre), mirrored east-west
    first when `mirror`, every place and street renamed afresh (seeded, none of Helsinki's)."""
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)

    def move(latlng):
        x, y = features.to_xy(latlng)
        if mirror:
            x = -x
        return features.to_latlng((x * cos + y * sin, -x * sin + y * cos))

    return _rename(features, NameGenerator(f"city:{seed}", avoid=helsinki_names()), name, move)


def grid_city(seed, name: str) -> MapFeatures:
    """A generated town (see the module doc): streets as 2-point segments sharing exact node
    coordinates, places 5–14 m off both sides of every street every 12–30 m."""
    rng = random.Random(f"virl-grid:{seed}")
    gen = NameGenerator(f"grid:{seed}", avoid=helsinki_names())
    bx, by = rng.uniform(35, 90), rng.uniform(35, 90)
    nx, ny = int(700 // bx) + 1, int(700 // by) + 1
    theta = math.radians(rng.uniform(0, 360))
    amp, wave = rng.uniform(0, 14), rng.uniform(250, 600)
    origin = (rng.uniform(-45, 62), rng.uniform(-120, 150))
    cos_o = math.cos(math.radians(origin[0]))

    def xy(i: int, j: int) -> tuple[float, float]:
        x = (i - nx / 2) * bx + rng.uniform(-0.12, 0.12) * bx
        y = (j - ny / 2) * by + rng.uniform(-0.12, 0.12) * by
        x += amp * math.sin(2 * math.pi * y / wave)
        return (x * math.cos(theta) - y * math.sin(theta), x * math.sin(theta) + y * math.cos(theta))

    nodes = {(i, j): xy(i, j) for i in range(nx) for j in range(ny)}

    def latlng(p):
        return (round(origin[0] + p[1] / 111_320.0, 6), round(origin[1] + p[0] / (111_320.0 * cos_o), 6))

    # grid lines (named), with some edges removed (merged blocks), plus a few diagonals
    edges: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    for j in range(ny):
        label = gen.street()
        edges += [((i, j), (i + 1, j), label) for i in range(nx - 1) if rng.random() > 0.12]
    for i in range(nx):
        label = gen.street()
        edges += [((i, j), (i, j + 1), label) for j in range(ny - 1) if rng.random() > 0.12]
    for _ in range(rng.randint(0, 3)):
        i, j, label = rng.randrange(nx - 4), rng.randrange(ny - 4), gen.street()
        edges += [((i + k, j + k), (i + k + 1, j + k + 1), label) for k in range(rng.randint(2, 4))]
    kinds, weights = zip(*_GRID_KINDS)
    streets, places = [], []
    for a, b, label in edges:
        pa, pb = nodes[a], nodes[b]
        streets.append(Street(label, (latlng(pa), latlng(pb))))
        dx, dy = pb[0] - pa[0], pb[1] - pa[1]
        length = math.hypot(dx, dy)
        nxv, nyv = -dy / length, dx / length
        for side in (-1, 1):
            t = rng.uniform(4, 20)
            while t < length - 4:
                off = side * rng.uniform(5, 14)
                p = (pa[0] + dx * t / length + nxv * off, pa[1] + dy * t / length + nyv * off)
                kind = rng.choices(kinds, weights)[0]
                lat, lng = latlng(p)
                places.append(Place(gen.place(kind), kind, lat, lng))
                t += rng.uniform(12, 30)
    return MapFeatures(name, streets, places, "generated street grid (no real map)")


@lru_cache(maxsize=None)
def training_city(index: int) -> VirlData:
    """Training city `index` (0..N_CITIES-1) as a route set, built once per process."""
    if not 0 <= index < N_CITIES:
        raise IndexError(f"training city {index} out of range (0..{N_CITIES - 1})")
    name = f"city:{index}"
    if city_kind(index) == "helsinki":
        angle, mirror = city_transform(index)
        features = transform_city(_bundled_features("helsinki.map.json.gz"), angle, mirror, index, name)
        about = (f"synthetic training city {index}: Helsinki's streets rotated {angle:g} deg"
                 f"{', mirrored' if mirror else ''}, every place and street renamed afresh")
    else:
        features = grid_city(index, name)
        about = f"synthetic training city {index}: a generated street grid with fresh names"
    records = generate_routes(features, n=ROUTES_PER_CITY, seed=100 + index, prefix=f"city{index}-", region=name)
    routes = [parse_route(r, i, name) for i, r in enumerate(records)]
    mapping = PanoMapping([(k[0], k[1], v) for r in routes for k, v in exact_mapping(r).items()])
    return VirlData(name, routes, mapping, features, None, about)
