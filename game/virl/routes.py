"""V-IRL route data: the released layout (`route_infos.json`, the GPS→panorama mapping,
`street_views/<pano>.jpg` + `<pano>.metadata.json`), our JSON mapping form, and milestone parsing.

A release directory is loaded unchanged from wherever the user points. The mapping ships as a
pickle in the release; it is unpickled only through `load_pickle_mapping(path, trusted=True)`,
which the operator opts into (CLI `sftvsrl virl convert --trust-pickle`, or the environment
variable `SFTVSRL_VIRL_TRUSTED_PICKLE` naming that exact file), and even then with an unpickler
that refuses every global (a dict of float tuples → str needs none). Our own data are JSON only.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .geo import EARTH_RADIUS_KM, haversine_m, interpolate

NO_LANDMARK = "No landmark nearby"
MAPPING_RADIUS_M = 20.0
MAPPING_FORMAT = "sftvsrl-virl-pano-mapping"
TRUSTED_PICKLE_ENV = "SFTVSRL_VIRL_TRUSTED_PICKLE"

ROUTE_FILE = "route_infos.json"
MAPPING_FILES = ("gps_pano_mapping.json", "gps_pano_mapping.json.gz")
PICKLE_FILE = "gps_pano_mapping.pkl"
STREET_VIEW_DIR = "street_views"


class RouteDataError(ValueError):
    """Bad or missing route data; the message names the file."""


# --------------------------------------------------------------------------------------------
# milestone_info

def parse_milestone_info(text: str) -> list[dict[str, str]]:
    """Parse a `milestone_info` string into one dict per block, as the reference parser does:
    split on `}`, drop a leading `{`, split each line at its first `:`, strip spaces, a trailing
    comma and quotes from keys and values. Empty blocks are skipped."""
    blocks: list[dict[str, str]] = []
    for raw in text.split("}"):
        block = raw.strip()
        if block.startswith("{"):
            block = block[1:]
        block = block.strip()
        if not block:
            continue
        entry: dict[str, str] = {}
        for line in block.split("\n"):
            if ":" not in line:
                continue
            key, value = line.split(":", 1)
            key = key.strip().rstrip(",").strip().strip('"')
            value = value.strip().rstrip(",").strip().strip('"')
            entry[key] = value
        blocks.append(entry)
    return blocks


@dataclass(frozen=True)
class Milestone:
    """One milestone block: the leg from key point i to i+1 and the landmark seen on arrival."""
    heading: int            # deg_i: integer bearing of the leg
    direction: str          # dir_i: compass word inside the parentheses
    landmark: str           # lm_i, verbatim (default "No landmark nearby")
    fields: dict[str, str] = field(default_factory=dict, compare=False)


def _milestone(fields: dict[str, str], where: str) -> Milestone:
    raw = fields.get("to_next_intersection_heading")
    if raw is None:
        raise RouteDataError(f"{where}: milestone without to_next_intersection_heading")
    head, _, rest = raw.partition("(")
    try:
        deg = int(head.strip())
    except ValueError:
        raise RouteDataError(f"{where}: bad to_next_intersection_heading {raw!r}") from None
    direction = rest.split(")")[0].strip()
    if not direction:
        raise RouteDataError(f"{where}: no compass word in {raw!r}")
    return Milestone(deg, direction, fields.get("landmarks", NO_LANDMARK), fields)


# --------------------------------------------------------------------------------------------
# routes

@dataclass(frozen=True)
class Route:
    """One route record. `record` is the raw dict, kept unchanged (it round-trips to JSON)."""
    index: int
    route_id: str
    start: tuple[float, float]
    key_points: tuple[tuple[float, float], ...]
    milestones: tuple[Milestone, ...]
    record_init_heading: int            # 0 means "draw a random heading"
    dest_name: str
    record: dict[str, Any] = field(compare=False, repr=False)

    @property
    def n_turns(self) -> int:
        return len(self.key_points) - 1


def _latlng(value: Any, where: str, what: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise RouteDataError(f"{where}: {what} must be [lat, lng], got {value!r}")
    return (float(value[0]), float(value[1]))


def parse_route(record: Any, index: int, source: str = "<route>") -> Route:
    """Validate one route dict (the fields the environment reads) and build a `Route`."""
    where = f"{source}: route {index}"
    if not isinstance(record, dict):
        raise RouteDataError(f"{where}: expected an object, got {type(record).__name__}")
    try:
        start = _latlng(record["start_place"]["relocated_geocode"], where, "start_place.relocated_geocode")
        results = record["route_results"]
        geocodes = results["geocode_list"]
        milestone_info = record["milestone_info"]
        dest = record["dest_place"]
        results["landmark_list"]
    except (KeyError, TypeError) as exc:
        raise RouteDataError(f"{where}: missing required field {exc}") from None
    if not isinstance(geocodes, list) or not geocodes:
        raise RouteDataError(f"{where}: route_results.geocode_list must be a non-empty list")
    keys = tuple(_latlng(g, where, "geocode_list entry") for g in geocodes)
    if not isinstance(milestone_info, str):
        raise RouteDataError(f"{where}: milestone_info must be a string")
    milestones = tuple(_milestone(b, where) for b in parse_milestone_info(milestone_info))
    if len(milestones) != len(keys):
        raise RouteDataError(f"{where}: {len(milestones)} milestones for {len(keys)} key points")
    init = record.get("init_heading", 0) or 0
    if not isinstance(init, (int, float)) or isinstance(init, bool):
        raise RouteDataError(f"{where}: init_heading must be a number")
    name = dest.get("name", "") if isinstance(dest, dict) else ""
    rid = str(record.get("route_id", index))
    return Route(index, rid, start, keys, milestones, int(init), str(name), record)


def parse_route_infos(data: Any, source: str = ROUTE_FILE) -> tuple[list[Route], int]:
    """Parse the `[routes, counter]` top level of route_infos.json."""
    if (not isinstance(data, list) or len(data) != 2 or not isinstance(data[0], list)
            or not isinstance(data[1], int)):
        raise RouteDataError(f"{source}: expected a JSON array [routes, counter]")
    return [parse_route(r, i, source) for i, r in enumerate(data[0])], data[1]


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON (or gzipped JSON) file; errors name the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RouteDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise RouteDataError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RouteDataError(f"{path}: bad gzip data ({exc})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RouteDataError(f"{path}: malformed JSON ({exc})") from None


def load_routes(path: str | os.PathLike) -> list[Route]:
    """Load `route_infos.json` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / ROUTE_FILE
    return parse_route_infos(read_json(path), str(path))[0]


def write_routes(path: str | os.PathLike, records: Iterable[dict], counter: int | None = None) -> None:
    """Write route records in the released `[routes, counter]` form (gzip when the name ends .gz)."""
    records = list(records)
    text = json.dumps([records, len(records) if counter is None else counter], ensure_ascii=False)
    _write_text(Path(path), text)


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: never leaves a half-written file in place of the old one


# --------------------------------------------------------------------------------------------
# GPS → panorama mapping

class PanoMapping:
    """The `{(lat, lng): pano_id}` mapping with the reference's lookup: exact tuple match first,
    otherwise the nearest key by haversine distance, accepted when closer than `radius_m`."""

    def __init__(self, entries: Iterable[tuple[float, float, str]], radius_m: float = MAPPING_RADIUS_M):
        self._map: dict[tuple[float, float], str] = {}
        for lat, lng, pano in entries:
            self._map[(float(lat), float(lng))] = str(pano)
        self.radius_m = radius_m
        self._keys = list(self._map)
        arr = np.array(self._keys, dtype=np.float64).reshape(-1, 2)
        self._lat = np.radians(arr[:, 0])
        self._lng = np.radians(arr[:, 1])

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key) -> bool:
        return tuple(key) in self._map

    def items(self):
        return self._map.items()

    def pano_at(self, key: tuple[float, float]) -> str | None:
        return self._map.get(tuple(key))  # type: ignore[arg-type]  # a (lat, lng) pair, as given

    def relocate(self, point: tuple[float, float]) -> tuple[float, float] | None:
        """The key the reference would snap `point` to, or None when none lies within the radius."""
        point = (float(point[0]), float(point[1]))
        if point in self._map:
            return point
        if not self._keys:
            return None
        # Vectorised prefilter, then the exact scalar metric over the few survivors in key order,
        # so ties resolve like the reference's linear scan (first strictly-smaller wins).
        lat, lng = math.radians(point[0]), math.radians(point[1])
        h = (np.sin((self._lat - lat) / 2) ** 2
             + np.cos(lat) * np.cos(self._lat) * np.sin((self._lng - lng) / 2) ** 2)
        d = 2 * EARTH_RADIUS_KM * 1000.0 * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        best, best_key = float("inf"), None
        for i in np.flatnonzero(d < self.radius_m + 1.0):
            key = self._keys[int(i)]
            dist = haversine_m(point, key)
            if dist < best:
                best, best_key = dist, key
        if best_key is not None and best < self.radius_m:
            return best_key
        return None

    def to_json(self) -> dict:
        return {"format": MAPPING_FORMAT, "version": 1,
                "entries": [[k[0], k[1], v] for k, v in self._map.items()]}

    def save(self, path: str | os.PathLike) -> None:
        """Write our JSON form (gzip when the name ends in .gz)."""
        _write_text(Path(path), json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def from_json(cls, data: Any, source: str = "<mapping>", radius_m: float = MAPPING_RADIUS_M) -> "PanoMapping":
        entries = data.get("entries") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise RouteDataError(f"{source}: expected {{'format': {MAPPING_FORMAT!r}, 'entries': [[lat, lng, pano], ...]}}")
        out = []
        for i, e in enumerate(entries):
            if (not isinstance(e, list) or len(e) != 3 or not isinstance(e[2], str)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in e[:2])):
                raise RouteDataError(f"{source}: entry {i} must be [lat, lng, pano_id], got {e!r}")
            out.append((e[0], e[1], e[2]))
        return cls(out, radius_m)

    @classmethod
    def load(cls, path: str | os.PathLike, radius_m: float = MAPPING_RADIUS_M) -> "PanoMapping":
        return cls.from_json(read_json(path), str(path), radius_m)


class _NoGlobalsUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # refuse every global: no code can run
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def load_pickle_mapping(path: str | os.PathLike, *, trusted: bool = False,
                        radius_m: float = MAPPING_RADIUS_M) -> PanoMapping:
    """Load the release's `gps_pano_mapping.pkl`. Only with `trusted=True` (the operator's explicit
    opt-in) or when `$SFTVSRL_VIRL_TRUSTED_PICKLE` names this very file. Globals are refused."""
    path = Path(path)
    configured = os.environ.get(TRUSTED_PICKLE_ENV)
    if not trusted and not (configured and Path(configured).resolve() == path.resolve()):
        raise RouteDataError(
            f"{path}: refusing to unpickle without an explicit opt-in; convert it once with "
            f"`sftvsrl virl convert DIR --trust-pickle` or set {TRUSTED_PICKLE_ENV} to this path")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RouteDataError(f"{path}: file not found") from None
    try:
        data = _NoGlobalsUnpickler(io.BytesIO(raw)).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise RouteDataError(f"{path}: not a plain pickled mapping ({exc})") from None
    if not isinstance(data, dict):
        raise RouteDataError(f"{path}: expected a dict {{(lat, lng): pano_id}}")
    entries = []
    for k, v in data.items():
        if not (isinstance(k, tuple) and len(k) == 2 and isinstance(v, str)):
            raise RouteDataError(f"{path}: bad mapping item {k!r}: {v!r}")
        entries.append((k[0], k[1], v))
    return PanoMapping(entries, radius_m)


def exact_mapping(route: Route, straight_line_length: int = 5, prefix: str | None = None) -> PanoMapping:
    """A mapping whose keys are the start, every key point and every interpolation candidate, so
    relocation is the identity (the conformance vectors' `exact` mode; also our generator's)."""
    prefix = prefix or f"{route.route_id}_"
    entries = [(route.start[0], route.start[1], f"{prefix}P0")]
    prev = route.start
    for k, cur in enumerate(route.key_points, start=1):
        for j in range(1, straight_line_length + 1):
            c = interpolate(prev, cur, j, straight_line_length)
            entries.append((c[0], c[1], f"{prefix}P{k - 1}_P{k}_c{j}"))
        entries.append((cur[0], cur[1], f"{prefix}P{k}"))
        prev = cur
    return PanoMapping(entries)


# --------------------------------------------------------------------------------------------
# a release directory

@dataclass
class ReleaseDataset:
    """A directory in the released layout: route_infos.json, a mapping, optional street_views/."""
    root: Path
    routes: list[Route]
    mapping: PanoMapping | None
    street_view_dir: Path | None

    @classmethod
    def open(cls, root: str | os.PathLike, *, trust_pickle: bool = False,
             require_mapping: bool = True) -> "ReleaseDataset":
        root = Path(root)
        if not root.is_dir():
            raise RouteDataError(f"{root}: not a directory")
        # the zip unpacks to <dir>/nyc_1k_routes/...; accept the parent too
        if not (root / ROUTE_FILE).exists():
            subs = [p for p in root.iterdir() if p.is_dir() and (p / ROUTE_FILE).exists()]
            if len(subs) == 1:
                root = subs[0]
        routes = load_routes(root / ROUTE_FILE)
        mapping = None
        for name in MAPPING_FILES:
            if (root / name).exists():
                mapping = PanoMapping.load(root / name)
                break
        else:
            if (root / PICKLE_FILE).exists():
                mapping = load_pickle_mapping(root / PICKLE_FILE, trusted=trust_pickle)
        if mapping is None and require_mapping:
            raise RouteDataError(f"{root}: no {MAPPING_FILES[0]} or {PICKLE_FILE} found")
        sv = root / STREET_VIEW_DIR
        return cls(root, routes, mapping, sv if sv.is_dir() else None)

    def route(self, key: str | int) -> Route:
        return find_route(self.routes, key, str(self.root / ROUTE_FILE))


def find_route(routes: list[Route], key: str | int, source: str = "routes") -> Route:
    """A route by index (int or digit string) or by route_id."""
    for r in routes:
        if r.route_id == str(key):
            return r
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        i = int(key)
        if 0 <= i < len(routes):
            return routes[i]
    raise RouteDataError(f"{source}: unknown route {key!r} ({len(routes)} routes)")


def convert_release(root: str | os.PathLike, out: str | os.PathLike | None = None, *,
                    trust_pickle: bool = False) -> Path:
    """Write the release's pickled mapping as our JSON form next to it (or at `out`)."""
    root = Path(root)
    pkl = root / PICKLE_FILE if root.is_dir() else root
    mapping = load_pickle_mapping(pkl, trusted=trust_pickle)
    target = Path(out) if out else pkl.with_name("gps_pano_mapping.json.gz")
    mapping.save(target)
    return target
