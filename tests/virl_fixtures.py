"""Small synthetic V-IRL data for tests: a 3 × 3 street grid with named places, routes generated
from it, and a fake release directory (route_infos.json, pickled mapping, small panoramas)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from game.virl.geo import offset_m
from game.virl.generate import generate_routes
from game.virl.mapdata import MapFeatures, Place, Street
from game.virl.routes import exact_mapping, parse_route, write_routes

ORIGIN = (60.17, 24.94)
TYPES = ("cafe", "bank", "restaurant", "bakery", "bar", "pharmacy", "library", "gym")


def tiny_city() -> MapFeatures:
    streets, places = [], []
    for i, x in enumerate((-60, 0, 60)):
        streets.append(Street(f"North Street {i}", tuple(offset_m(ORIGIN, x, y) for y in (-90, -60, 0, 60, 90))))
        streets.append(Street(f"East Street {i}", tuple(offset_m(ORIGIN, y, x) for y in (-90, -60, 0, 60, 90))))
    n = 0
    for gx in (-60, 0, 60):
        for gy in (-60, 0, 60):
            for dx, dy in ((11, 12), (-12, -11), (12, -30), (-30, 12)):
                places.append(Place(f"Place {n} {TYPES[n % len(TYPES)].title()}", TYPES[n % len(TYPES)],
                                    *offset_m(ORIGIN, gx + dx, gy + dy)))
                n += 1
    return MapFeatures("tinycity", streets, places)


def fake_release(root: Path, n_routes: int = 4, pano_size=(256, 128)) -> Path:
    """A directory in the released layout, with the mapping as a pickle and tiny panoramas."""
    features = tiny_city()
    records = generate_routes(features, n=n_routes, seed=3, prefix="tiny-")[:n_routes]
    assert records, "the tiny city must yield routes"
    root.mkdir(parents=True, exist_ok=True)
    write_routes(root / "route_infos.json", records, counter=len(records) + 7)
    mapping = {}
    for i, rec in enumerate(records):
        mapping.update(exact_mapping(parse_route(rec, i)).items())
    (root / "gps_pano_mapping.pkl").write_bytes(pickle.dumps(mapping))
    sv = root / "street_views"
    sv.mkdir()
    w, h = pano_size
    cols = np.linspace(0, 255, w, dtype=np.uint8)
    img = np.stack([np.broadcast_to(cols, (h, w)), np.full((h, w), 90, np.uint8),
                    np.broadcast_to(255 - cols, (h, w))], -1)
    for pano in set(mapping.values()):
        Image.fromarray(img).save(sv / f"{pano}.jpg", quality=80)
        (sv / f"{pano}.metadata.json").write_text(json.dumps({"rotation": 0.0}))
    return root
