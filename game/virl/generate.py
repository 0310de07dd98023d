"""Offline route generator: routes in the released `route_infos.json` schema built from map
features (street centre-lines + named places), following V-IRL's collection rules:

- destination: a named place of one of V-IRL's 20 destination types, within 18 m of a street;
- start: another named place 40–150 m (straight line) from the destination;
- the shortest street path between their street projections, collapsed to key points where the
  bearing turns by more than `turn_deg` (30°), is at most 150 m long with 1–2 turns;
- landmark at each turn point: the nearest other named place within 18 m (required);
- milestone blocks written in V-IRL's template with the integer leg bearing, its compass word and
  the landmark's relative direction from the arrival bearing (45° bins).

Everything is deterministic for a given feature set and seed.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geo import bearing_deg, compass_word, geodesic_m, relative_word
from .mapdata import MapFeatures, Place
from .routes import PanoMapping, exact_mapping, parse_route, parse_milestone_info, write_routes

DEST_TYPES = ("bank", "restaurant", "supermarket", "bakery", "cafe", "pharmacy", "hospital", "spa",
              "convenience_store", "school", "library", "park", "lodging", "laundry", "movie_theater",
              "book_store", "clothing_store", "jewelry_store", "gym", "bar")
MILESTONE_TEMPLATE = ('\n{{\n"intersection_idx": "{idx}",\n"landmarks": "{landmarks}",\n'
                      '"distance": "{distance} meters",\n"human_heading": "{human}",\n'
                      '"to_next_intersection_heading": "{deg} ({word})",\n}}\n')


@dataclass
class _Graph:
    xy: np.ndarray                         # N × 2 metres
    adj: list[list[tuple[int, float]]]
    seg_nodes: np.ndarray                  # S × 2 node indices
    seg_xy: np.ndarray                     # S × 4


def build_graph(features: MapFeatures) -> _Graph:
    index: dict[tuple[float, float], int] = {}
    pts: list[tuple[float, float]] = []
    edges = set()
    for s in features.streets:
        ids = []
        for c in s.coords:
            key = (round(c[0], 6), round(c[1], 6))
            if key not in index:
                index[key] = len(pts)
                pts.append(key)
            ids.append(index[key])
        for a, b in zip(ids, ids[1:]):
            if a != b:
                edges.add((min(a, b), max(a, b)))
    xy = features.to_xy_array(np.array(pts))
    adj: list[list[tuple[int, float]]] = [[] for _ in pts]
    seg_nodes = np.array(sorted(edges), dtype=np.int64).reshape(-1, 2)
    for a, b in seg_nodes:
        d = float(np.hypot(*(xy[a] - xy[b])))
        adj[a].append((int(b), d))
        adj[b].append((int(a), d))
    seg_xy = np.concatenate([xy[seg_nodes[:, 0]], xy[seg_nodes[:, 1]]], axis=1) if len(seg_nodes) else np.zeros((0, 4))
    return _Graph(xy, adj, seg_nodes, seg_xy)


def _project(g: _Graph, p: np.ndarray):
    """Nearest point on any street segment: (segment index, t, point, distance)."""
    s = g.seg_xy
    d = s[:, 2:] - s[:, :2]
    ll = np.maximum((d ** 2).sum(1), 1e-9)
    t = np.clip(((p - s[:, :2]) * d).sum(1) / ll, 0, 1)
    q = s[:, :2] + t[:, None] * d
    dist = np.hypot(*(q - p).T)
    i = int(dist.argmin())
    return i, float(t[i]), q[i], float(dist[i])


def _shortest_path(g: _Graph, src, dst, limit: float):
    """Dijkstra between two projected points (segment, t, xy); returns the xy polyline or None."""
    (si, st, sq), (di, dt, dq) = src, dst
    if si == di:
        return [sq, dq]
    a0, b0 = g.seg_nodes[si]
    a1, b1 = g.seg_nodes[di]
    seg_len_s = float(np.hypot(*(g.xy[b0] - g.xy[a0])))
    seg_len_d = float(np.hypot(*(g.xy[b1] - g.xy[a1])))
    start = {int(a0): st * seg_len_s, int(b0): (1 - st) * seg_len_s}
    goal = {int(a1): dt * seg_len_d, int(b1): (1 - dt) * seg_len_d}
    dist = dict(start)
    prev: dict[int, int | None] = {n: None for n in start}
    heap = [(d, n) for n, d in start.items()]
    heapq.heapify(heap)
    best, best_node = math.inf, None
    while heap:
        d, n = heapq.heappop(heap)
        if d > dist.get(n, math.inf) or d > limit:
            continue
        if n in goal and d + goal[n] < best:
            best, best_node = d + goal[n], n
        for m, w in g.adj[n]:
            nd = d + w
            if nd < dist.get(m, math.inf):
                dist[m], prev[m] = nd, n
                heapq.heappush(heap, (nd, m))
    if best_node is None or best > limit:
        return None
    nodes = []
    node: int | None = best_node
    while node is not None:
        nodes.append(node)
        node = prev[node]
    nodes.reverse()
    return [sq] + [g.xy[n] for n in nodes] + [dq]


def _bearing_xy(a, b) -> float:
    return math.degrees(math.atan2(b[0] - a[0], b[1] - a[1])) % 360.0


def _simplify(poly, turn_deg: float, min_leg: float = 2.0):
    """Drop near-duplicate points, then keep only points where the bearing turns > turn_deg."""
    pts = [np.asarray(poly[0])]
    for p in poly[1:]:
        if np.hypot(*(np.asarray(p) - pts[-1])) >= min_leg:
            pts.append(np.asarray(p))
    if len(pts) < 2:
        return None
    keys = [pts[0]]
    for i in range(1, len(pts) - 1):
        turn = abs((_bearing_xy(keys[-1], pts[i]) - _bearing_xy(pts[i], pts[i + 1]) + 180) % 360 - 180)
        if turn > turn_deg:
            keys.append(pts[i])
    keys.append(pts[-1])
    return keys


def _place_dict(p: Place, relocated=None) -> dict:
    d = {"name": p.name, "geocode": [p.lat, p.lng], "place_types": [p.type]}
    if relocated is not None:
        d["relocated_geocode"] = list(relocated)
    return d


def generate_routes(features: MapFeatures, *, n: int | None = None, seed: int = 0, prefix: str = "r",
                    min_start_m: float = 40.0, max_start_m: float = 150.0, max_route_m: float = 150.0,
                    landmark_radius_m: float = 18.0, turn_deg: float = 30.0,
                    region: str = "", keep=None, max_starts: int = 40,
                  per_destination: int = 4) -> list[dict]:
    """Route records in the released schema. `keep(latlng_points) -> bool` can restrict routes
    to a district (used for the held-out split)."""
    g = build_graph(features)
    rng = random.Random(seed)
    places = features.places
    pxy = features.place_xy
    dests = [i for i, p in enumerate(places) if p.type in DEST_TYPES]
    rng.shuffle(dests)
    proj_cache: dict[int, tuple] = {}

    def proj(i):
        if i not in proj_cache:
            proj_cache[i] = _project(g, pxy[i])
        return proj_cache[i]

    used_pairs: set[tuple[int, int]] = set()
    used_dest: dict[int, int] = {}
    out: list[dict] = []
    for di in dests:
        seg, t, dq, dd = proj(di)
        if dd > landmark_radius_m:
            continue                          # destination must be within 18 m of a street
        dvec = pxy - pxy[di]
        dist = np.hypot(dvec[:, 0], dvec[:, 1])
        starts = [i for i in np.flatnonzero((dist >= min_start_m) & (dist <= max_start_m))
                  if places[int(i)].name != places[di].name]
        rng.shuffle(starts)
        for start in starts[:max_starts]:
            si = int(start)
            sseg, stt, sq, sd = proj(si)
            if sd > 25.0 or (si, di) in used_pairs:
                continue
            poly = _shortest_path(g, (sseg, stt, sq), (seg, t, dq), max_route_m)
            if poly is None:
                continue
            keys = _simplify(poly, turn_deg)
            if keys is None or not 3 <= len(keys) <= 4:      # start + 1–2 turns + stop
                continue
            record = _make_record(features, keys, places[si], places[di], di, landmark_radius_m,
                                  f"{prefix}{len(out):04d}", region)
            if record is None or (keep is not None and not keep(record_points(record))):
                continue
            used_pairs.add((si, di))
            used_dest[di] = used_dest.get(di, 0) + 1
            out.append(record)
            if used_dest[di] >= per_destination:
                break
        if n is not None and len(out) >= n:
            break
    return out


def record_points(record: dict) -> list:
    return [record["start_place"]["relocated_geocode"]] + record["route_results"]["geocode_list"]


def _make_record(features: MapFeatures, keys, start: Place, dest: Place, dest_idx: int,
                 radius: float, route_id: str, region: str) -> dict | None:
    latlng = [features.to_latlng(k) for k in keys]
    latlng = [(round(a, 7), round(b, 7)) for a, b in latlng]
    legs = [geodesic_m(a, b) for a, b in zip(latlng, latlng[1:])]
    if min(legs) < 3.0 or sum(legs) > 150.0:
        return None
    blocks, landmark_list = [], []
    human = 0
    for i in range(len(latlng) - 1):
        a, b = latlng[i], latlng[i + 1]
        bearing = bearing_deg(a, b)
        deg = int(bearing)
        last = i == len(latlng) - 2
        if last:
            rel = relative_word(bearing_deg(b, (dest.lat, dest.lng)) - bearing)
            landmarks = f"The destination {dest.name} is on your {rel}"
        else:
            bxy = features.to_xy(b)
            cands = [(p, d, br) for p, d, br in features.places_near(bxy, radius)
                     if p.name not in (dest.name, start.name)]
            if not cands:
                return None                   # V-IRL rule: a landmark at each turn point
            place, _, _ = cands[0]
            rel = relative_word(bearing_deg(b, (place.lat, place.lng)) - bearing)
            landmarks = f"{place.name} is on your {rel}"
            landmark_list.append({**_place_dict(place), "spatial_relation": rel, "expression": landmarks})
        block = MILESTONE_TEMPLATE.format(idx=i + 1, landmarks=landmarks, distance=round(legs[i]),
                                          human=human, deg=deg, word=compass_word(bearing))
        parsed = parse_milestone_info(block)
        if len(parsed) != 1 or parsed[0].get("landmarks") != landmarks:
            return None                       # a name the milestone parser would mangle
        blocks.append(block)
        human = deg
    return {
        "route_id": route_id,
        "start_place": {**_place_dict(start, latlng[0]), "region": region},
        "dest_place": {**_place_dict(dest, latlng[-1]), "region": region},
        "route_results": {"geocode_list": [list(p) for p in latlng[1:]], "landmark_list": landmark_list,
                          "distance_list": [round(x) for x in legs], "distance": round(sum(legs)),
                          "n_landmarks": len(landmark_list)},
        "init_heading": 0,
        "instruction": "",
        "milestone_info": "".join(blocks),
        "source": f"synthetic from OpenStreetMap features ({features.name})",
    }


# ---- the bundled sets -------------------------------------------------------------------------
HELSINKI_OOD_LNG = 24.947      # held-out district: routes entirely east of this meridian


def helsinki_splits(features: MapFeatures, seed: int = 1) -> dict[str, list[dict]]:
    """ID routes (entirely west of the cut) and held-out routes (entirely east of it)."""
    west = generate_routes(features, seed=seed, prefix="hel-id-", region="Helsinki centre (west)",
                           keep=lambda pts: all(p[1] < HELSINKI_OOD_LNG for p in pts))
    east = generate_routes(features, seed=seed, prefix="hel-ood-", region="Helsinki centre (east, held out)",
                           keep=lambda pts: all(p[1] >= HELSINKI_OOD_LNG for p in pts))
    return {"helsinki_id": west, "helsinki_ood": east}


def write_release_dir(out_dir, records: list[dict], features: MapFeatures | None = None) -> None:
    """Write routes in the released layout: route_infos.json, gps_pano_mapping.json.gz (exact
    mapping, synthetic pano ids), plus the map features the synthetic panoramas are drawn from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_routes(out / "route_infos.json", records)
    entries: list[tuple[float, float, str]] = []
    for i, rec in enumerate(records):
        route = parse_route(rec, i, str(out / "route_infos.json"))
        entries.extend((k[0], k[1], v) for k, v in exact_mapping(route).items())
    PanoMapping(entries).save(out / "gps_pano_mapping.json.gz")
    if features is not None:
        features.save(out / f"{features.name or 'features'}.map.json.gz")
