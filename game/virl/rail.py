"""The V-IRL rail: the precomputed list of positions, headings, ground-truth actions, observations
and instruction sentences that an episode walks (spec §1.2), plus the action-space and
instruction texts (§2.3, §2.4).

A rail is built from a `Route`, the initial heading and a source of uniform draws for the
`drop_rate` decisions (anything with a `.random()` method; the episode passes its own private
generator, never the global `random` state).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .geo import geodesic_m, interpolate, relative_turn_word
from .routes import NO_LANDMARK, PanoMapping, Route, RouteDataError

FORWARD = "forward()"
STOP = "stop()"
INTERSECTION_OBS = "You observe an intersection"
NO_LANDMARKS_OBS = "No landmarks nearby"     # plural: start and forward entries
FORWARD_MIN_DIST_M = 5.0                       # legs longer than this get forward candidates
CANDIDATE_END_CLEARANCE_M = 8.0                # kept candidates lie further than this from both ends

ABSOLUTE_DIRECTIONS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")
RELATIVE_DIRECTIONS = ("left", "right", "slightly left", "slightly right")


def turn_action(word: str) -> str:
    return f"turn_direction({word})"


def action_space_text(absolute_action: bool = True) -> str:
    """The exact `{action_space}` text of the prompts (three lines, no trailing newline)."""
    if absolute_action:
        choices = "any following 8 directions " + str(list(ABSOLUTE_DIRECTIONS))
    else:
        choices = "any following " + str(list(RELATIVE_DIRECTIONS))
    return ('"forward()": indicates moving forward one step\n'
            '"turn_direction(x)": indicates adjust the ego agent direction towards x direction. '
            f"x could be {choices}\n"
            '"stop()": indicates the navigation is finished.')


def legal_actions(absolute_action: bool = True) -> tuple[str, ...]:
    words = ABSOLUTE_DIRECTIONS if absolute_action else RELATIVE_DIRECTIONS
    return (FORWARD,) + tuple(turn_action(w) for w in words) + (STOP,)


class UniformSource(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class RailEntry:
    """One position on the rail. `gt_action` is the graded action for the rail's action space."""
    position: tuple[float, float]
    heading: int
    gt_action: str
    absolute_action: str
    relative_action: str
    observation: str                 # landmark part (what the verifier compares against)
    intersection_observation: str
    instruction: str
    instruction_idx: int             # 1-based sentence number
    kind: str                        # "start" | "forward" | "key" | "stop"
    key_index: int                   # k of the key position this entry belongs to (or leads to)
    pano_id: str | None = None

    @property
    def is_stop(self) -> bool:
        return self.kind == "stop"

    @property
    def oracle_observation(self) -> str:
        """`<observation>; <intersection>`, the intersection part forced empty on the stop entry."""
        inter = "" if self.is_stop else self.intersection_observation
        return f"{self.observation}; {inter}"


@dataclass(frozen=True)
class Rail:
    route: Route
    init_heading: int
    absolute_action: bool
    entries: tuple[RailEntry, ...]
    sentences: tuple[str, ...]
    headings: tuple[int, ...]        # H = [h0, deg_0, ..., deg_(G-1)]

    @property
    def instruction_text(self) -> str:
        """Numbered sentences, one per line, ending with a newline (`{instruction}`)."""
        return "".join(f"{i}. {s}\n" for i, s in enumerate(self.sentences, start=1))

    @property
    def action_space_text(self) -> str:
        return action_space_text(self.absolute_action)

    @property
    def gt_actions(self) -> list[str]:
        return [e.gt_action for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)


def instruction_sentences(route: Route, init_heading: int) -> tuple[list[str], list[int], list[str]]:
    """(sentences, headings H, relative words) for a route and initial heading (spec §1.2, §2.4)."""
    headings = [int(init_heading)] + [m.heading for m in route.milestones]
    sentences, relwords = [], []
    last = len(route.milestones) - 1
    for i, m in enumerate(route.milestones):
        word = relative_turn_word(m.heading - headings[i])   # unwrapped difference: a quirk
        relwords.append(word)
        if i == last:
            sentences.append(f"Turn {word} to face {m.direction}.")
            sentences.append(f"Move forward until you reach destination where {m.landmark}.")
        else:
            sentences.append(f"{'First, turn' if i == 0 else 'Turn'} {word} to face {m.direction}.")
            if m.landmark == NO_LANDMARK:
                sentences.append("Move forward until you reach next intersection.")
            else:
                sentences.append(f"Move forward until you reach next intersection where {m.landmark}.")
    return sentences, headings, relwords


class _NoDraws:
    """Stands in for a generator when drop_rate is 0: never drops."""

    def random(self) -> float:
        return 1.0


def build_rail(route: Route, init_heading: int, *, absolute_action: bool = True,
               mapping: PanoMapping | None = None, relocation: bool = True, drop_rate: float = 0.0,
               straight_line_length: int = 5, rng: UniformSource | None = None) -> Rail:
    """Build the rail exactly as the reference does (spec §1.2, call order §1.2a).

    `rng.random()` is called five times (`straight_line_length` times) per key point whose leg is
    longer than 5 m, in order, whether or not `drop_rate` is zero; candidate j is dropped when the
    draw is below `drop_rate`. With `relocation`, positions snap to `mapping` keys; a key position
    with no panorama within the radius is an error, a candidate with none is skipped."""
    if relocation and mapping is None:
        raise ValueError("relocation needs a panorama mapping")
    if rng is None:
        if drop_rate > 0:
            raise ValueError("drop_rate > 0 needs a random source (rng)")
        rng = _NoDraws()
    sentences, headings, relwords = instruction_sentences(route, init_heading)
    n_keys = len(route.key_points)
    keys = [route.start] + list(route.key_points)

    def snap(p, what):
        assert mapping is not None  # checked above
        q = mapping.relocate(p)
        if q is None:
            raise RouteDataError(f"route {route.route_id}: no panorama within "
                                 f"{mapping.radius_m:g} m of {what} {p}")
        return q

    entries: list[RailEntry] = []
    sent = 0
    prev = snap(keys[0], "the start") if relocation else keys[0]
    for k, raw in enumerate(keys):
        dist = geodesic_m(prev, raw) if k > 0 else 0.0
        cur = snap(raw, f"key point {k}") if relocation else raw
        if k > 0 and dist > FORWARD_MIN_DIST_M:
            for j in range(1, straight_line_length + 1):
                drop = rng.random() < drop_rate
                if drop:
                    continue
                cand = interpolate(prev, cur, j, straight_line_length)
                if relocation:
                    assert mapping is not None  # checked above
                    moved = mapping.relocate(cand)
                    if moved is None:
                        continue
                    cand = moved
                    if (geodesic_m(cand, prev) <= CANDIDATE_END_CLEARANCE_M
                            or geodesic_m(cand, cur) <= CANDIDATE_END_CLEARANCE_M):
                        continue
                entries.append(RailEntry(
                    position=cand, heading=headings[k], gt_action=FORWARD, absolute_action=FORWARD,
                    relative_action=FORWARD, observation=NO_LANDMARKS_OBS, intersection_observation="",
                    instruction=sentences[sent], instruction_idx=sent + 1, kind="forward", key_index=k,
                    pano_id=mapping.pano_at(cand) if mapping is not None else None))
            sent += 1
        if k == n_keys:
            sent -= 1
            absolute = relative = STOP
            kind = "stop"
        else:
            absolute = turn_action(route.milestones[k].direction)
            relative = turn_action(relwords[k])
            kind = "start" if k == 0 else "key"
        entries.append(RailEntry(
            position=cur, heading=headings[k], gt_action=absolute if absolute_action else relative,
            absolute_action=absolute, relative_action=relative,
            observation=NO_LANDMARKS_OBS if k == 0 else route.milestones[k - 1].landmark,
            intersection_observation="" if k == 0 else INTERSECTION_OBS,
            instruction=sentences[sent], instruction_idx=sent + 1, kind=kind, key_index=k,
            pano_id=mapping.pano_at(cur) if mapping is not None else None))
        sent += 1
        prev = cur
    return Rail(route, int(init_heading), absolute_action, tuple(entries), tuple(sentences), tuple(headings))
