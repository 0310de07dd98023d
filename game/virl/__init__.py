"""V-IRL navigation (the paper's second task), re-implemented offline and on rails.

Modules, one concept each:
- `routes`    – route data: released layout, `route_infos.json`, milestone parsing, the GPS→panorama
                mapping (our JSON form; the release's pickle only behind an explicit opt-in);
- `rail`      – the precomputed rail (positions, headings, gt actions, observations, sentences) and
                the action-space / instruction texts;
- `verifier`  – reply parsing and grading (`step_rewards_virl`), feedback strings;
- `episode`   – the stateful episode: 2-try budget, history text, step records, metrics, seeding;
- `geo`       – distances, bearings, compass / relative words;
- `render`    – perspective crops and the 2×2 street-view grid; `panorama` – synthetic panoramas;
- `mapdata`   – compact map features; `mapview` – the top-down map;
- `generate`  – offline route generator; `osm` – build-time feature extraction (pyrosm);
- `datasets`  – bundled sets and release directories behind one object; `env` – Gymnasium.
"""
from .episode import EpisodeOver, StepRecord, VirlEpisode, obs_act_text, start_episode
from .rail import Rail, RailEntry, action_space_text, build_rail, legal_actions
from .routes import (PanoMapping, ReleaseDataset, Route, RouteDataError, exact_mapping, load_pickle_mapping,
                     load_routes, parse_milestone_info, parse_route_infos)
from .verifier import Verdict, re_match, verify

__all__ = [
    "EpisodeOver", "StepRecord", "VirlEpisode", "obs_act_text", "start_episode",
    "Rail", "RailEntry", "action_space_text", "build_rail", "legal_actions",
    "PanoMapping", "ReleaseDataset", "Route", "RouteDataError", "exact_mapping", "load_pickle_mapping",
    "load_routes", "parse_milestone_info", "parse_route_infos",
    "Verdict", "re_match", "verify",
]
