"""The V-IRL tab's logic for people: pick a route, see instructions, map and observation, act.

A walk is a small replayable state (source, route, action space, seed and the actions taken);
the episode is rebuilt from it on each event, so the UI holds no engine objects and a deep link
can restore a walk exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from game.tasks import Instance, InstanceError, route_data, task_name
from game.virl.datasets import BUNDLED, VirlData
from game.virl.episode import VirlEpisode
from game.virl.mapview import AGENT, ROUTE, VISITED, episode_map
from game.virl.rail import legal_actions
from game.virl.render import street_view_grid

from ..sources import SourceRefused, check_source
from .common import badge, esc

SOURCE_CHOICES = [(f"bundled:{name} — {desc}", f"bundled:{name}") for name, (_, _, _, desc) in BUNDLED.items()]


class InputError(ValueError):
    """Bad input from the page: shown inline."""


def data_for(source: str) -> VirlData:
    """The route set (opened once per process by the registry), if the route-source policy
    (`app.sources`) lets a visitor open it — deep links included."""
    try:
        return route_data(check_source(source))
    except (SourceRefused, InstanceError) as exc:
        raise InputError(str(exc)) from None


@dataclass(frozen=True)
class Walk:
    source: str = "bundled:helsinki"
    route: int = 0
    absolute: bool = True
    seed: int = 0
    actions: tuple[str, ...] = field(default_factory=tuple)
    view: str = "text"  # "text" (V-IRL-L) or "image" (V-IRL-VL): what you see and the models get

    def link(self) -> dict[str, str]:
        return {"tab": "virl", "source": self.source, "route": str(self.route),
                "actions": "absolute" if self.absolute else "relative", "seed": str(self.seed),
                "view": self.view}


def new_walk(source: str, route, absolute: bool, seed=0, view: str = "text") -> Walk:
    if view not in ("text", "image"):
        raise InputError(f"unknown view {str(view)[:20]!r}: use text or image")
    data = data_for(source)
    try:
        if len(str(route)) > 12:
            raise ValueError
        index = int(float(str(route).strip()))
    except (ValueError, OverflowError):
        raise InputError(f"the route must be a number from 0 to {len(data.routes) - 1}, "
                         f"got {str(route)[:24]!r}") from None
    if not 0 <= index < len(data.routes):
        raise InputError(f"route {index} does not exist: {source} has routes 0 to {len(data.routes) - 1}")
    try:
        if len(str(seed)) > 12:
            raise ValueError
        seed_i = int(float(str(seed).strip() or 0))
    except (ValueError, OverflowError):
        raise InputError(f"the seed must be a whole number, got {str(seed)[:24]!r}") from None
    return Walk(source, index, bool(absolute), seed_i, view=view)


def walk_from_link(params: dict[str, str]) -> Walk | None:
    """The walk a V-IRL link names (None for a link to another tab); bad parameters, or a source the
    route-source policy refuses (e.g. `source=/etc`), raise InputError (shown on the page)."""
    if params.get("tab") != "virl":
        return None
    if params.get("actions", "absolute") not in ("absolute", "relative"):
        raise InputError(f"unknown action space {params['actions'][:20]!r}: use absolute or relative")
    return new_walk(params.get("source", "bundled:helsinki"), params.get("route", "0"),
                    params.get("actions", "absolute") != "relative", params.get("seed", "0"),
                    params.get("view", "text"))


def episode_of(walk: Walk) -> VirlEpisode:
    """Rebuild the episode: the registry's V-IRL-L session for the walk, then the person's actions,
    each turned into a reply by the task's `person_reply` (as over the API and in the CLI)."""
    data_for(walk.source)  # a clear InputError for a bad source
    instance = Instance(task_name("virl"), {"source": walk.source, "route": walk.route, "seed": walk.seed,
                                   "absolute_action": walk.absolute})
    session = instance.spec.session(instance)
    for action in walk.actions:
        if session.done:
            break
        session.step(instance.spec.person_reply(session, action))
    return session.episode


def act(walk: Walk, action: str) -> Walk:
    ep = episode_of(walk)
    if ep.done:
        raise InputError("this walk is over — start the route again")
    if action not in legal_actions(walk.absolute):
        raise InputError(f"{action!r} is not an action of this action space")
    return replace(walk, actions=walk.actions + (action,))


def instructions_html(ep: VirlEpisode) -> str:
    current = ep.entry.instruction_idx
    lines = [s for s in ep.instruction_text.splitlines() if s.strip()]
    items = []
    for i, line in enumerate(lines, 1):
        cls = "sv-current" if i == current and not ep.done else ("sv-done" if i < current or ep.done else "")
        items.append(f'<li class="{cls}">{esc(line)}</li>')
    return f'<ol class="sv-instructions">{"".join(items)}</ol>'


def status_html(ep: VirlEpisode) -> str:
    if ep.done:
        outcome = badge("ok", "Arrived") if ep.success else badge("bad", "Failed")
    else:
        outcome = badge("info", f"Step {ep.index + 1} of {len(ep.rail.entries)}")
    acc = f"{ep.per_step_accuracy:.0%}" if ep.records else "—"
    parts = [f"per-step accuracy {acc}"]
    if not ep.done:
        parts.append(f"{ep.remaining} tr{'y' if ep.remaining == 1 else 'ies'} left at this step")
    return (f'<div class="sv-info" data-done="{str(ep.done).lower()}">{outcome} '
            f'<span class="sv-dim">{" · ".join(parts)}</span></div>')


def log_html(ep: VirlEpisode) -> str:
    """Your moves in plain words (the verifier's text is written for the model: it is in Inspect)."""
    rows = []
    for r in ep.records:
        kind = "ok" if r.reward > 0 else "bad"
        rows.append(f'<li>{badge(kind, f"{r.reward:+g}")} <code>{esc(r.parsed_action or "—")}</code> '
                    f'<span class="sv-dim">{esc(move_words(r))}</span></li>')
    return f'<ol class="sv-log">{"".join(rows)}</ol>' if rows else ""


def move_words(r) -> str:
    """What one of your moves did, for a person."""
    if not r.graded:
        return "no tries left at this step: the walk ends here."
    if r.reward > 0:
        return "right move." + (" You arrived." if r.is_success else "")
    if r.reward <= -1.5:
        return "that names a landmark that is not at this intersection."
    if r.truncated or r.terminated:
        return "not the right move, and that was the last try at this step: the walk ends here."
    return "not the right move here: try another action."


def observation_text(ep: VirlEpisode) -> str:
    """What the text model sees at this step: the observation/action history (V-IRL-L)."""
    return ep.obs_act_seq(language_only=True)


def map_image(ep: VirlEpisode, source: str, walks=()) -> Image.Image:
    """The map of the person's walk; `walks` adds the models' walks, `(positions, rgb)` each."""
    img = episode_map(ep, data_for(source).features, walks=walks)
    return img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))


def legend_html(walkers=()) -> str:
    """The map's legend: the route, your steps and position, and each walker's colour (`walkers`:
    (name, label, rgb) of the models whose walks are drawn)."""
    def rgb(c) -> str:
        return "rgb({},{},{})".format(*c)

    items = [f'<span class="sv-key"><i style="background:{rgb(ROUTE)}"></i>the route</span>',
             f'<span class="sv-key"><i style="background:{rgb(VISITED)}"></i>your steps</span>',
             f'<span class="sv-key"><b style="color:{rgb(AGENT)}">▲</b> where you stand</span>']
    items += [f'<span class="sv-key" data-model="{esc(name)}"><i style="background:{rgb(colour)}"></i>'
              f'{esc(label)}\'s walk</span>' for name, label, colour in walkers]
    return f'<div class="sv-legend">{" ".join(items)}</div>'


def grid_image(ep: VirlEpisode, source: str) -> Image.Image:
    """The 2×2 street-view grid at the current position (what the vision model sees)."""
    data = data_for(source)
    pano, rotation = data.panorama(ep.entry)
    return Image.fromarray(street_view_grid(pano, ep.entry.heading, rotation=rotation, resolution=600))


def action_choices(absolute: bool) -> list[str]:
    return list(legal_actions(absolute))
