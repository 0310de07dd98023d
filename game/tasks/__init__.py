"""The task registry: the one place that knows the four tasks of the paper (gp-l, gp-vl, virl-l,
virl-vl). Everything that differs between tasks is asked of the registry; nothing else branches on
a task name.

    from game.tasks import TASKS, get_task
    task = get_task("virl-l")
    instance = task.instances("id", n=10)[0]      # seeded evaluation streams per split
    session = task.session(instance)             # prompt() / image() / step(text) / done / success / outcome
    session.step(task.person_reply(session, "forward()"))

Per task (`Task` subclasses in `gp.py` and `virl.py`): a typed, validated config (`config_type`:
unknown or out-of-range parameters raise `InstanceError`), its evaluation splits and seeded
instance streams, `session(instance)`, the person's-move → reply function, the outcome enum, the
headline metric and the reference logger's reward classes, and what its Findings view says (`findings`:
words; `paper`: the paper's reported numbers). Metrics and the evaluation protocol
built on this are in `game.protocol`. Like all of `game/`, this imports nothing from `models/` or
`app/`.

A task is one entry of `TASKS`; everything else reads the registry when it runs (`get_task`,
`TASKS`, `outcomes()`), never a copy made at import, so a task registered later (as a test does)
is played, evaluated, stored, inspected and shown like the four (README: "Add a task").
"""
from __future__ import annotations

from .base import TASKS, FindingsWords, Instance, InstanceError, Split, StepRecord, StepResult, Task, get_task
from .gp import GPLanguage, GPSession, GPVision, formula_reply, normalise_formula
from .virl import VirlLanguage, VirlSession, VirlVision, action_reply, route_data

# `TASKS` and `get_task` live in `base` (one dict, filled here) so that nothing there imports this package.
TASKS.update({t.name: t for t in (GPLanguage(), GPVision(), VirlLanguage(), VirlVision())})

Session = GPSession | VirlSession


def outcomes() -> tuple[str, ...]:
    """Every outcome class of the registered tasks, in the registry's order. Read from `TASKS` at
    each call (never copy the registry at import time: a task added later must count too)."""
    return tuple(dict.fromkeys(o for t in TASKS.values() for o in t.outcomes))


def task_name(family: str, vision: bool = False) -> str:
    """The task of an engine family ("gp", "virl") in its text or vision variant: what a page or a
    command picks by what it shows, never by naming a task."""
    for name, spec in TASKS.items():
        if spec.family == family and spec.vision == bool(vision):
            return name
    raise InstanceError(f"no {'vision' if vision else 'text'} task of family {family!r}")


DEFAULT_TASK = next(iter(TASKS))   # the first task of the registry: what a page or command shows first


def open_session(instance: Instance) -> Session:
    """A fresh session for `instance`; raises `InstanceError` with a clear message on bad input."""
    return instance.spec.session(instance)


__all__ = ["TASKS", "FindingsWords", "Instance", "InstanceError", "Session", "Split", "StepRecord", "StepResult", "Task",
           "DEFAULT_TASK", "action_reply", "formula_reply", "get_task", "normalise_formula", "open_session", "outcomes",
           "task_name", "route_data"]
