"""'Show me the difference': instances on which the shipped default models disagree, picked from
the findings' episode files (`app.findings`: `models/checkpoints/findings/<task>/episodes.jsonl.gz`),
with how often they disagree each way on that split, so an audience sees it is not cherry-picked.

The two models compared are the default configuration's own models (`models/default_models.toml`,
the ones not marked optional: SFT and RL); each one's stage in the findings file is its checkpoint
folder's name for the task without the task prefix (`checkpoints/gp-l-rl` → `rl`), else the model's
name. Nothing here is hard-coded to a stage, a split or a number: a regenerated findings file with
other stages or seeds is read as it is.

An episode "solves" when it succeeds (GP: the hand is solved within its tries; V-IRL: the walk
arrives). On a V-IRL split where the two never differ in that, the one with more correct moves in
the episode is the better one (per-step accuracy, the V-IRL headline). The direction shown is the
more common one on the split (stated with both counts); each click takes the next instance of it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from game.tasks import get_task
from models import config as model_config

from . import findings as fd


@dataclass(frozen=True)
class Side:
    """One of the two compared models: its configured name, label and stage in the findings file."""

    model: str
    label: str
    stage: str


@dataclass
class SplitCount:
    """How the two compared models fare on one split's instances (the same instance for both)."""

    split: str
    n: int = 0                      # instances both models played
    only: dict[str, list] = field(default_factory=dict)   # stage → instances (index, params) it alone wins
    both: int = 0                   # both solved (measure "success") / same number of correct moves ("moves")
    neither: int = 0                # neither solved ("success" only)
    measure: str = "success"        # "success", or "moves" (V-IRL: more correct moves, when success never differs)


@dataclass(frozen=True)
class Pick:
    """What one click shows: the instance, who won it in the shipped evaluation, and the counts."""

    task: str
    split: str
    params: dict | None          # the instance's parameters (None: the models never disagree here)
    index: int | None            # its index in the split's evaluation list
    winner: Side | None
    loser: Side | None
    sides: tuple[Side, Side]
    count: SplitCount
    run_id: str | None           # the findings' imported run (Inspect links to the recorded episodes)


class DifferenceError(ValueError):
    """No findings to pick from (the message says what is missing)."""


def default_sides(task: str) -> tuple[Side, Side]:
    """The default configuration's two models (not optional) and their stages for `task`."""
    config = model_config.load_config(model_config.DEFAULT_FILE, env={})  # DEFAULT_FILE read at call time
    specs = [s for s in config.models.values() if not s.optional and s.supports(task)][:2]
    if len(specs) < 2:
        raise DifferenceError(f"the default model configuration has fewer than two models for {task}")

    def stage(spec) -> str:
        name = Path(spec.path_for(task) or spec.name).name
        return name[len(task) + 1:] if name.startswith(f"{task}-") else spec.name

    a, b = (Side(s.name, s.label or s.name, stage(s)) for s in specs)
    return a, b


_CACHE: dict[tuple, dict] = {}
_LOCK = threading.Lock()


def _results(f: fd.Findings, stages: tuple[str, str]) -> dict[str, dict[int, dict]]:
    """split → index → {"params", stage: (success, correct moves)} for the two stages (cached per file)."""
    path = f.episodes_path
    if path is None:
        raise DifferenceError(f"no {fd.EPISODES_FILE} ships with the {f.task} findings: nothing to pick from")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, stages)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        out: dict[str, dict[int, dict]] = {}
        for rec in fd.read_episodes(path):
            if rec["stage"] not in stages:
                continue
            row = out.setdefault(rec["split"], {}).setdefault(rec["index"], {"params": rec["params"]})
            correct = sum(1 for s in rec["steps"] if (s.get("reward") or 0) > 0)
            row[rec["stage"]] = (bool(rec.get("success")), correct)
        _CACHE.clear()
        _CACHE[key] = out
        return out


def count(task: str, split: str, sides: tuple[Side, Side], rows: dict[int, dict]) -> SplitCount:
    a, b = (s.stage for s in sides)
    c = SplitCount(split, only={a: [], b: []})
    paired = [(i, r) for i, r in sorted(rows.items()) if a in r and b in r]
    c.n = len(paired)
    for i, r in paired:
        (sa, _), (sb, _) = r[a], r[b]
        if sa != sb:
            c.only[a if sa else b].append((i, r["params"]))
        elif sa:
            c.both += 1
        else:
            c.neither += 1
    if not c.only[a] and not c.only[b] and get_task(task).family == "virl":
        c = SplitCount(split, n=c.n, only={a: [], b: []}, measure="moves")
        for i, r in paired:
            (_, ma), (_, mb) = r[a], r[b]
            if ma != mb:
                c.only[a if ma > mb else b].append((i, r["params"]))
            else:
                c.both += 1
    return c


def pick(task: str, choice: dict, turn: int = 0, folder: Path | None = None) -> Pick:
    """The `turn`-th instance (cycling) of the more common direction of disagreement on the split
    `choice` selects (`Task.split_of`: GP the rule and suits, V-IRL the action space and route set).
    Raises `DifferenceError` when the task has no findings episodes."""
    f = fd.load(task, folder)
    if f is None:
        raise DifferenceError(f"no findings ship for {task}: nothing to pick from ({fd.produce_command(task)})")
    sides = default_sides(task)
    for side in sides:
        if side.stage not in f.stages:
            raise DifferenceError(f"the {task} findings have no stage {side.stage!r} (the default model "
                                  f"{side.model!r}); they have {', '.join(f.stages)}")
    split = get_task(task).split_of(choice)
    results = _results(f, (sides[0].stage, sides[1].stage))
    if split not in results:
        raise DifferenceError(f"the {task} findings have no episodes on {fd.split_label(task, split)}")
    c = count(task, split, sides, results[split])
    a, b = sides
    wins_a, wins_b = len(c.only[a.stage]), len(c.only[b.stage])
    if not wins_a and not wins_b:
        return Pick(task, split, None, None, None, None, sides, c, f.run_id)
    # The more common direction; on a tie, alternate between the two with each click.
    first = a if wins_a > wins_b or (wins_a == wins_b and turn % 2 == 0) else b
    winner, loser = (first, b if first is a else a)
    pool = c.only[winner.stage]
    index, params = pool[(turn // (2 if wins_a == wins_b else 1)) % len(pool)]
    return Pick(task, split, dict(params), index, winner, loser, sides, c, f.run_id)


def recorded_link(p: Pick, side: Side) -> str | None:
    """The Inspect link to `side`'s recorded episode of the pick (the findings' imported run)."""
    if p.run_id is None or p.index is None:
        return None
    return f"?tab=inspect&run={p.run_id}&episode={fd.episode_id(p.run_id, side.stage, p.split, p.index)}"
