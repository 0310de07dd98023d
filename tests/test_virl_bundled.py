"""The bundled offline real-map route sets."""
from __future__ import annotations

from pathlib import Path

import pytest

from game.virl.datasets import DATA_DIR, load_bundled
from game.virl.episode import start_episode
from game.virl.geo import geodesic_m
from game.virl.mapdata import OSM_ATTRIBUTION


@pytest.mark.parametrize("name", ["helsinki", "helsinki-ood"])
def test_every_bundled_route_is_walkable_in_both_action_spaces(name):
    data = load_bundled(name)
    for route in data.routes:
        for absolute in (True, False):
            ep = start_episode(data.routes, seed=route.index, route_idx=route.index, mapping=data.mapping,
                               absolute_action=absolute)
            while not ep.done:
                ep.step(ep.oracle_reply())
            assert ep.success, (name, route.route_id, absolute)


def test_bundled_sets_follow_collection_rules():
    id_set, ood = load_bundled("helsinki"), load_bundled("helsinki-ood")
    assert len(id_set.routes) >= 300 and len(ood.routes) >= 50
    assert not {r.route_id for r in id_set.routes} & {r.route_id for r in ood.routes}
    for route in id_set.routes + ood.routes:
        pts = [route.start, *route.key_points]
        assert 2 <= len(route.key_points) <= 3                       # 1–2 turns
        assert sum(geodesic_m(a, b) for a, b in zip(pts, pts[1:])) <= 150.5
        for m in route.milestones[:-1]:
            assert m.landmark != "No landmark nearby"                 # a landmark at each turn
        assert route.milestones[-1].landmark.startswith("The destination ")
    # held-out routes lie on other streets (east of the cut)
    assert max(p[1] for r in id_set.routes for p in [r.start, *r.key_points]) < min(
        p[1] for r in ood.routes for p in [r.start, *r.key_points])


def test_bundled_data_budget_and_attribution():
    size = sum(p.stat().st_size for p in DATA_DIR.iterdir())
    assert size < 15 * 1024 * 1024
    assert load_bundled().features.attribution == OSM_ATTRIBUTION
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert OSM_ATTRIBUTION in readme
