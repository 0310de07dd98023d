"""The "Show me the difference" button on 24 Points and V-IRL: one click deals the next hand (or
route) on which the shipped default models disagree under the rule on screen (`app.difference`,
read from the findings' episode files, offline), says how often they disagree each way on that
split and who won this one in the shipped evaluation (with links to both recorded episodes), and
runs the models on it. The words live here; the picking and the counts in `app.difference`."""
from __future__ import annotations

import gradio as gr

from game.tasks import get_task

from .. import difference as diff
from .. import findings as fd
from ..findings import findings_dir
from .common import URL_UPDATE_JS, error_html, esc

BUTTON = "Show me the difference (D)"


def _what(task: str, n: int) -> str:
    return ("hand" if get_task(task).family == "gp" else "route") + ("s" if n != 1 else "")


def _won(task: str) -> tuple[str, str]:
    """Winning an instance in words: (past, present) — GP solves a hand, V-IRL arrives on a route."""
    return ("solved", "solves") if get_task(task).family == "gp" else ("arrived on", "arrives on")


def note_html(p: diff.Pick) -> str:
    """Who won the picked instance in the shipped evaluation, and how often each direction occurs."""
    c, (a, b) = p.count, p.sides
    where = esc(fd.split_label(p.task, p.split))
    things = _what(p.task, c.n)
    wins = {s.stage: len(c.only[s.stage]) for s in p.sides}
    if c.measure == "success":
        counts = (f"On {where}, of the {c.n} {things} in the shipped evaluation, <b>{esc(a.label)} alone "
                  f"{_won(p.task)[1]} {wins[a.stage]}</b> and <b>{esc(b.label)} alone {wins[b.stage]}</b> "
                  f"(both {c.both}, neither {c.neither}).")
    else:
        counts = (f"On {where} neither model's walk ever differs in arriving, so this compares correct moves: "
                  f"of the {c.n} {things}, <b>{esc(a.label)} makes more on {wins[a.stage]}</b>, "
                  f"<b>{esc(b.label)} on {wins[b.stage]}</b>, the same number on {c.both}.")
    if p.params is None:
        return (f'<div class="sv-note sv-difference" role="status" data-direction="none">{counts} The two shipped '
                f'models never disagree here: there is no {_what(p.task, 1)} to show on this split. Try another '
                f'rule or task.</div>')
    assert p.winner is not None and p.loser is not None  # the models disagree here: one won
    verb = _won(p.task)[0] if c.measure == "success" else "made more correct moves on"
    links = " · ".join(f'<a href="{esc(diff.recorded_link(p, s))}" target="_self">{esc(s.label)}\'s recorded episode</a>'
                       for s in (p.winner, p.loser) if diff.recorded_link(p, s))
    usual = ("the more common way round" if wins[p.winner.stage] > wins[p.loser.stage]
             else "as often one way as the other")
    return (f'<div class="sv-note sv-difference" role="status" data-direction="{esc(p.winner.stage)}" '
            f'data-split="{esc(p.split)}"><b>In the shipped evaluation, {esc(p.winner.label)} {verb} this '
            f'{_what(p.task, 1)} and {esc(p.loser.label)} did not</b> ({usual}). {counts} '
            f'Both models play it live now; their replies are sampled, so a live run can differ. '
            f'<span class="sv-dim">{links}</span></div>')


def add(ctx, panel, tab: dict, *, task_of, choice_of, state_of) -> None:
    """The button (beside Deal / Start route) and its note (under the hand / above the columns). `task_of(state, vision)` is the
    task on screen, `choice_of(state)` what selects the split (GP: rule and suits; V-IRL: action
    space and route set), `state_of(params, state)` the tab's state for a picked instance."""
    folder = findings_dir(ctx.settings)
    turn = gr.State(0)
    picked = gr.State(False)
    with tab.get("deal_row") or panel.actions:   # beside Deal / Start route: it deals too
        button = gr.Button(BUTTON, elem_id=f"{panel.prefix}-difference")
    with tab.get("difference_slot") or gr.Column():
        note = gr.HTML("", elem_id=f"{panel.prefix}-difference-note", elem_classes="sv-collapse")
    show, outputs = tab["show"], tab["outputs"]

    def on_click(value, turn_v, ticked, *vision):
        task = task_of(value, bool(vision and vision[0]))
        try:
            p = diff.pick(task, choice_of(value), turn_v or 0, folder)
        except (diff.DifferenceError, ValueError) as exc:
            return {note: error_html(str(exc)), picked: False}
        out = {note: note_html(p), turn: (turn_v or 0) + 1, picked: p.params is not None}
        if p.params is not None:
            out.update(show(state_of(p.params, value)))
            both = [s.model for s in p.sides if s.model in ctx.pool.names]
            out[panel.pick] = list(dict.fromkeys([*(ticked or []), *both]))
        return out

    inputs = [tab["state"], turn, panel.pick] + ([panel.vision] if panel.vision is not None else [])

    async def run_picked(picked_v, *args, request: gr.Request | None = None):
        if not picked_v:
            return
        async for out in panel.run_models(*args, request):
            yield out

    # gradio counts a handler's parameters: one wrapper per arity of the panel's inputs (the last
    # is the page's game tokens: the run is the visitor's game, through the service layer)
    if panel.vision is None:
        async def run_after(picked_v, value, names_v, games_v, request: gr.Request):
            async for out in run_picked(picked_v, value, names_v, games_v, request=request):
                yield out
    else:
        async def run_after(picked_v, value, names_v, vl, games_v, request: gr.Request):  # type: ignore[misc]
            async for out in run_picked(picked_v, value, names_v, vl, games_v, request=request):
                yield out

    event = (button.click(on_click, inputs, [note, turn, picked, panel.pick, *outputs], js=panel.show_js)
             .then(None, tab["link"], None, js=URL_UPDATE_JS)
             .then(run_after, [picked, *panel.inputs], panel.outputs, concurrency_limit=None))
    panel.events.append(event)
