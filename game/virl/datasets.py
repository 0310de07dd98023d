"""Where V-IRL routes come from: the bundled offline real-map sets (`bundled:NAME`) or a released
directory (`nyc_1k_routes/`, `VLN_mini/`) in the original layout, behind one `VirlData` object
that also knows how to get the panorama for a rail entry (released JPEGs or synthetic ones).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .mapdata import MapFeatures
from .rail import RailEntry
from .routes import (PanoMapping, ReleaseDataset, Route, RouteDataError, exact_mapping, find_route,
                     load_routes)

DATA_DIR = Path(__file__).resolve().parent / "data"
# name -> (routes file, map features file, panorama style, description)
BUNDLED = {
    "helsinki": ("helsinki_id.routes.json.gz", "helsinki.map.json.gz", "day",
                 "central Helsinki (OSM), in-distribution routes"),
    "helsinki-ood": ("helsinki_ood.routes.json.gz", "helsinki.map.json.gz", "dusk",
                     "central Helsinki (OSM), held-out streets drawn in another style (visual-OOD analogue)"),
}
DEFAULT_SOURCE = "bundled:helsinki"


@dataclass
class VirlData:
    name: str
    routes: list[Route]
    mapping: PanoMapping | None
    features: MapFeatures | None = None
    street_views: Any = None        # render.StreetViewFolder, or None
    description: str = ""
    panorama_style: str = "day"
    _synthetic: Any = field(default=None, repr=False)  # panorama.SyntheticPanoramas, made on first use

    def route(self, key) -> Route:
        return find_route(self.routes, key, self.name)

    @property
    def has_images(self) -> bool:
        return self.street_views is not None or self.features is not None

    def panorama(self, entry: RailEntry) -> tuple[np.ndarray, float]:
        """(equirectangular RGB panorama, rotation) at a rail entry."""
        pano_id = entry.pano_id
        if pano_id is None and self.mapping is not None:       # relocation off: look it up
            key = self.mapping.relocate(entry.position)
            pano_id = self.mapping.pano_at(key) if key is not None else None
        if self.street_views is not None and pano_id is not None:
            return self.street_views.load(pano_id)
        if self.features is not None:
            if self._synthetic is None:
                # lazy: the panorama painter loads PIL; routes and text episodes never draw
                from .panorama import SyntheticPanoramas
                self._synthetic = SyntheticPanoramas(self.features, style=self.panorama_style)
            return self._synthetic.load(entry.position)
        raise RouteDataError(f"{self.name}: no street views and no map features to draw panoramas from")


@lru_cache(maxsize=4)
def _bundled_features(filename: str) -> MapFeatures:
    return MapFeatures.load(DATA_DIR / filename)


def load_bundled(name: str = "helsinki") -> VirlData:
    if name not in BUNDLED:
        raise RouteDataError(f"unknown bundled route set {name!r} (have: {', '.join(BUNDLED)})")
    routes_file, map_file, style, desc = BUNDLED[name]
    path = DATA_DIR / routes_file
    if not path.exists():
        raise RouteDataError(f"{path}: bundled routes missing (run `sftvsrl virl generate`)")
    routes = load_routes(path)
    mapping = PanoMapping([(k[0], k[1], v) for r in routes for k, v in exact_mapping(r).items()])
    return VirlData(f"bundled:{name}", routes, mapping, _bundled_features(map_file), None, desc, style)


def open_release(root: str | Path, *, trust_pickle: bool = False) -> VirlData:
    # lazy: the street-view reader loads PIL; opening a route set for text episodes must not
    from .render import StreetViewFolder

    ds = ReleaseDataset.open(root, trust_pickle=trust_pickle)
    features = None
    for cand in sorted(ds.root.glob("*.map.json*")):
        features = MapFeatures.load(cand)
        break
    sv = StreetViewFolder(ds.street_view_dir) if ds.street_view_dir else None
    return VirlData(str(ds.root), ds.routes, ds.mapping, features, sv, "release directory")


def open_source(source: str | Path | None = None, *, trust_pickle: bool = False) -> VirlData:
    """`bundled:NAME`, a bare bundled name, or a directory in the released layout."""
    source = str(source or DEFAULT_SOURCE)
    if source.startswith("bundled:"):
        return load_bundled(source.split(":", 1)[1])
    if source in BUNDLED and not Path(source).exists():
        return load_bundled(source)
    return open_release(source, trust_pickle=trust_pickle)
