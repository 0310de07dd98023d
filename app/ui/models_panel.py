"""Model columns: SFT, RL (and any extra configured model) playing the instance on screen, side by
side and at the same time, as a live group started through the service layer (`app.services`).

Each column is rebuilt from the runner's typed events (`app.runner`: `Started`, `PromptSent`,
`Delta`, `StepDone`, `Finished`): one collapsible step per try with the reply (streaming), the
parsed fields, the reward and its failure class, the verifier's feedback and timing, then the final
outcome. Columns are independent: a slow or dead model only affects its own column. Stop cancels
the run and marks the unfinished columns "Stopped". On V-IRL each model's walk is drawn on the
tab's map in its column's colour, step by step, with a legend: the walk is the step record's
`state` (`game.tasks.VirlSession.place`), so no reply is ever graded again here.

There is one column per configured model (none is dropped), and a tab offers only the models that
serve the task on screen (GP-L or GP-VL, V-IRL-L or V-IRL-VL). Run brings the columns on screen
(`svShowResults`). A column whose checkpoint is still loading (the server's warm start,
`ModelPool.state`) says "loading…" until its first token.

A run is the page visitor's game (`common.visitor`: the caps of its address apply) and its token
joins the tokens the page keeps (`common.games_state`), so Inspect opens it for this visitor only.
Every way to start one (Run, the race, "Show me the difference") goes through `run_models`, so
through the service layer as that visitor.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from game.tasks import Instance, InstanceError, get_task, task_name

from .. import services
from ..access import Caller
from ..runner import Delta, Event, Finished, PromptSent, Started, StepDone
from . import difference_panel, landing, race
from . import virl_play as vp
from .common import badge, error_html, esc, kept_tokens, note_html, outcome_badge, serving, unserved_text, visitor
from .gp_play import Table

# Column i's colour (its walk on the V-IRL map): apart from the map's own route blue, visited green
# and position red.
COLOURS = [(230, 120, 20), (168, 60, 200), (0, 150, 160), (200, 40, 130), (120, 90, 40), (90, 90, 90)]
REFRESH_S = 0.08  # at most ~12 screen updates per second while text streams
_LIVE: "OrderedDict[tuple, list[Column]]" = OrderedDict()  # (session, tab) -> columns on screen
_LIVE_MAX = 256


@dataclass
class StepView:
    call: int
    text: str = ""
    result: StepDone | None = None


@dataclass
class Column:
    """What one model's column shows, built from runner events."""

    name: str
    label: str
    index: int = 0
    instance: Instance | None = None
    episode_id: str | None = None
    steps: list[StepView] = field(default_factory=list)
    finished: Finished | None = None
    error: str | None = None
    stopped: bool = False
    started_at: float = field(default_factory=time.perf_counter)
    solved_after_s: float | None = None
    positions: list = field(default_factory=list)  # V-IRL: where the model's walk has been
    loading: bool = False                          # its checkpoint is still loading (warm start)

    def apply(self, ev: Event) -> None:
        if isinstance(ev, Started):
            self.episode_id = ev.episode_id
        elif isinstance(ev, PromptSent):
            self.steps.append(StepView(ev.call))
        elif isinstance(ev, Delta) and self.steps:
            self.steps[-1].text += ev.text
        elif isinstance(ev, StepDone):
            if not self.steps or self.steps[-1].call != ev.call:
                self.steps.append(StepView(ev.call))
            self.steps[-1].text = ev.output
            self.steps[-1].result = ev
            if ev.terminated and ev.reward > 0 and self.solved_after_s is None:
                self.solved_after_s = time.perf_counter() - self.started_at
            self.positions = walk_of(ev) or self.positions
        elif isinstance(ev, Finished):
            self.finished = ev
            if ev.error:
                self.error = ev.error

    def html(self, task: str) -> str:
        colour = "rgb({},{},{})".format(*COLOURS[self.index % len(COLOURS)])
        swatch = "" if get_task(task).family != "virl" else \
            f'<span class="sv-swatch" style="background:{colour}" title="its walk on the map"></span>'
        head = f'<div class="sv-col-head">{swatch}<b>{esc(self.label)}</b> {self._outcome(task)}</div>'
        graded = [s for s in self.steps if s.result is not None and s.result.graded]
        informative = graded[-1] if graded else (self.steps[-1] if self.steps else None)
        body = "".join(self._step_html(s, s is informative, task) for s in self.steps
                       if s.result is not None or not self.error)
        if self.error:
            body += error_html(f"{self.label}: {self.error}")
        link = ""
        if self.episode_id and self.finished:
            link = (f'<div class="sv-dim"><a href="?tab=inspect&episode={esc(self.episode_id)}" '
                    f'target="_self">inspect episode {esc(self.episode_id[:8])}</a></div>')
        done = bool(self.finished) or self.stopped
        stopped = ' data-stopped="true"' if self.stopped else ""
        return (f'<div class="sv-col" data-model="{esc(self.name)}" data-done="{str(done).lower()}"{stopped}>'
                f'{head}{body}{link}</div>')

    def _outcome(self, task: str) -> str:
        if self.error:
            return badge("bad", "Error")
        if self.stopped and not self.finished:
            return badge("warn", "Stopped")
        one, _ = get_task(task).call_words
        if not self.finished:
            if self.loading and not any(s.text or s.result for s in self.steps):
                return badge("info", "loading the model…")
            return badge("info", f"{one} {len(self.steps)}…" if self.steps else "waiting…")
        won, lost = get_task(task).words
        if self.finished.success:
            n = sum(1 for s in self.steps if s.result)
            when = f" in {self.solved_after_s:.1f} s" if self.solved_after_s else ""
            return badge("ok", f"{won} at {one} {n}{when}" if get_task(task).family == "gp"
                         else f"{won} after {n} {get_task(task).call_words[n != 1]}{when}")
        return badge("bad", lost)

    def _step_html(self, step: StepView, open_: bool, task: str) -> str:
        r = step.result
        word = get_task(task).call_words[0].capitalize()
        if r is None:
            state = "stopped" if self.stopped else ("loading the model…" if self.loading and not step.text
                                                    else "generating…")
            return (f'<details class="sv-step" open><summary>{word} {step.call} · {state}</summary>'
                    f'<pre>{esc(step.text)}</pre></details>')
        if not r.graded:
            _, many = get_task(task).call_words
            return (f'<details class="sv-step sv-step-bad"><summary>After the last {word.lower()} · the {many} '
                    f'were used up: this reply was not graded</summary><pre>{esc(step.text)}</pre></details>')
        ok = r.reward > 0
        parsed = r.parsed or {}
        fields = " · ".join(f"{label} {_field(value, label)}" for label, value in get_task(task).step_fields(parsed))
        timing = r.timing or {}
        t_bits = []
        if timing.get("time_to_first_token_s") is not None:
            t_bits.append(f'TTFT {timing["time_to_first_token_s"] * 1000:.0f} ms')
        if timing.get("tokens_per_s"):
            t_bits.append(f'{timing["tokens_per_s"]:.0f} tok/s')
        extra = ""
        if r.float_rejected:
            extra = '<div class="sv-warn-text">correct, rejected by float rounding</div>'
        return (f'<details class="sv-step {"sv-step-ok" if ok else "sv-step-bad"}"{" open" if open_ else ""}>'
                f'<summary>{word} {r.call} · {outcome_badge(r.outcome)} reward {r.reward:+g}'
                f'</summary><pre>{esc(step.text)}</pre><div>{fields}</div>'
                f'<div>Feedback: <q>{esc(r.feedback)}</q></div>{extra}'
                f'<div class="sv-dim">{" · ".join(t_bits)}</div></details>')


def _field(value, label: str) -> str:
    if value in (None, "None", "", []):
        return f'<span class="sv-dim">(no {esc(label)} found)</span>'
    return f"<code>{esc(value)}</code>"


def _labels(ctx, names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = ctx.pool.spec(n).label or n
        except Exception:  # noqa: BLE001 - an unknown model is reported in its column
            out[n] = n
    return out


def _remember(key, columns: list[Column]) -> None:
    _LIVE[key] = columns
    _LIVE.move_to_end(key)
    while len(_LIVE) > _LIVE_MAX:
        _LIVE.popitem(last=False)


async def stream_columns(ctx, caller, instance: Instance, names: list[str], key=None, tokens: list | None = None,
                         n_cols: int | None = None):
    """Yield a list of column HTML (`n_cols` long, default one per name) as the runner's events
    arrive, for `caller` (`services.Caller`); with a `key` (session, tab) the columns stay reachable
    for Stop (`stopped_columns`); the started game's token is appended to `tokens` when given."""
    names = list(dict.fromkeys(names))
    n_cols = max(n_cols or 0, len(names))
    labels = _labels(ctx, names)
    columns = {n: Column(n, labels[n], i, instance) for i, n in enumerate(names)}
    if key is not None:
        _remember(key, list(columns.values()))

    def render() -> list:
        for n in names:  # the server's warm start may still be loading a checkpoint
            columns[n].loading = ctx.pool.state(n, instance.task) in ("loading", "cold")
        out = [columns[n].html(instance.task) for n in names]
        return out + [""] * (n_cols - len(out))

    players = []
    for n in names:
        try:
            if not ctx.pool.spec(n).supports(instance.task):
                columns[n].error = f"this model does not serve {instance.task}. {unserved_text(instance.task)}"
                continue
            players.append(services.model_player(ctx, n, instance.task))
        except Exception as exc:  # noqa: BLE001 - an unknown model, a missing checkpoint: its column
            columns[n].error = str(exc) or type(exc).__name__
    yield render()
    if not players:
        return
    try:
        group = await services.start_group(ctx, caller, instance, players, {"source": "ui"})
        if tokens is not None:
            tokens.append(services.game_token(ctx, group.group_id))
    except services.ServiceError as exc:
        for p in players:
            columns[p.name].error = str(exc)
        yield render()
        return
    by_episode: dict[str, str] = {}
    last = 0.0
    try:
        async for _index, ev in group.subscribe():
            if ev is None:
                continue
            if isinstance(ev, Started):
                by_episode[ev.episode_id] = ev.participant
            name = by_episode.get(getattr(ev, "episode_id", ""))
            if name in columns:
                columns[name].apply(ev)
            now = time.perf_counter()
            if not isinstance(ev, Delta) or now - last >= REFRESH_S:
                last = now
                yield render()
    finally:  # the page stopped listening (Stop, a new deal): stop the group too
        if not group.done and group.task is not None:
            group.task.cancel()
    yield render()


def stopped_columns(key) -> list[Column] | None:
    """The columns of the run `key` showed, marked stopped (None when there was no run)."""
    columns = _LIVE.pop(key, None)
    for c in columns or []:
        if not c.finished:
            c.stopped = True
    return columns


def walk_of(step: StepDone) -> list[tuple[float, float]]:
    """The walk a step record says its walker has made so far (V-IRL: `state["walk"]`, positions
    from the start on), as the map draws it; [] for a task without one (GP) and for a step stored
    before records kept their state. Read from the record: no session is opened, nothing graded."""
    return [(float(lat), float(lng)) for lat, lng in (step.state or {}).get("walk") or []]


def walks(columns: list[Column]) -> list[tuple]:
    """The models' V-IRL walks for the map, in their columns' colours."""
    return [(c.positions, COLOURS[c.index % len(COLOURS)]) for c in columns if c.positions]


def legend_html(columns: list[Column] | None = None) -> str:
    """The V-IRL map's legend with each model's walk in its column's colour."""
    return vp.legend_html([(c.name, c.label, COLOURS[c.index % len(COLOURS)]) for c in columns or []])


@dataclass
class Panel:
    """One tab's model controls and columns (the race and "Show me the difference" build on it)."""

    prefix: str
    pick: gr.CheckboxGroup
    vision: gr.Checkbox | None
    run: gr.Button
    stop: gr.Button
    actions: gr.Row
    cols: list
    run_models: object
    inputs: list
    outputs: list
    events: list
    show_js: str = ""


def choices_for(ctx, task: str) -> list[str]:
    """The configured models that serve `task`: what a tab offers for it."""
    return serving(ctx.pool, task)


def picked_for(ctx, task: str, ticked: list[str] | None) -> gr.CheckboxGroup:
    """The model picker for `task`: its serving models, keeping the ones ticked that serve it (the
    defaults when none does)."""
    offered = choices_for(ctx, task)
    keep = [n for n in (ticked or []) if n in offered] or [n for n in ctx.pool.defaults if n in offered]
    return gr.CheckboxGroup(choices=offered, value=keep)


def _panel(ctx, state, games, prefix: str, *, vision_task: str | None, vision_label: str, make_instance,
           nothing_yet: str, key_of, task: str, draw_map=None, map_output=None, legend_output=None, columns_in=None,
           show_id: str | None = None) -> Panel:
    """Controls + columns for one tab (`task`: the one it plays first; `games`: the page's game
    tokens). `make_instance(state_value, vision)` builds the instance; on V-IRL `draw_map(state_value,
    walks)` redraws the tab's map (`map_output`) with the walks, and `legend_output` says whose walk
    is which colour."""
    names = ctx.pool.names
    n_cols = max(1, len(names))
    offered = choices_for(ctx, task)
    default = [n for n in ctx.pool.defaults if n in offered]
    show_js = ("(...args) => { window.svShowResults && window.svShowResults("
               f"'{show_id or prefix + '-results'}', '#{prefix}-col-0 .sv-col'); return args; }}")
    with gr.Row(elem_classes="sv-actions sv-model-actions", elem_id=f"{prefix}-results") as actions:
        pick = gr.CheckboxGroup(offered, value=default, label="Models on this " + ("hand" if prefix == "gp" else "route"),
                                scale=2 if vision_task is not None else 3, min_width=200, elem_id=f"{prefix}-model-pick")
        vision = None
        if vision_task is not None:
            served = serving(ctx.pool, vision_task)
            # wide enough that the note on what to run (when no model serves it) stays a few lines
            vision = gr.Checkbox(label=vision_label, value=False, scale=2 if served else 3, min_width=220 if served else 300,
                                 interactive=bool(served), info=None if served else unserved_text(vision_task),
                                 elem_id=f"{prefix}-vision")
        run = gr.Button("Run models (R)", variant="primary", scale=1, min_width=140, elem_id=f"{prefix}-run")
        stop = gr.Button("Stop", scale=1, min_width=80, elem_id=f"{prefix}-stop")
    if ctx.pool.error:
        gr.HTML(error_html(f"Model configuration problem: {services.public_text(ctx, Caller(), ctx.pool.error)}"))
    with columns_in or gr.Column():
        with gr.Row(elem_classes="sv-columns", equal_height=False):
            cols = [gr.HTML("", elem_id=f"{prefix}-col-{i}", elem_classes="sv-model-col", min_width=260)
                    for i in range(n_cols)]
    outputs = cols + [o for o in (map_output, legend_output) if o is not None]

    async def run_models(value, names_v, vl, games_v, request: gr.Request):
        # a column per configured model at most (what the page may send is not trusted)
        names_v = list(dict.fromkeys(n for n in names_v if isinstance(n, str)))[:n_cols] \
            if isinstance(names_v, list) else []
        if value is None or not names_v:
            yield {cols[0]: error_html(nothing_yet if value is None else "Pick at least one model.")}
            return
        try:
            instance = make_instance(value, vl)
        except InstanceError as exc:
            yield {cols[0]: error_html(str(exc))}
            return
        if not serving(ctx.pool, instance.task):
            yield {cols[0]: note_html(unserved_text(instance.task)), **{c: "" for c in cols[1:]}}
            return
        key = (getattr(request, "session_hash", None), prefix)
        last_walks = None
        started: list[str] = []
        async for update in stream_columns(ctx, visitor(ctx, request, games_v), instance, names_v, key, started,
                                           n_cols):
            out = dict(zip(cols, update))
            if started:   # the page keeps the new game's token (Inspect opens it for this visitor)
                out[games] = kept_tokens(games_v, started.pop())
            if draw_map is not None:
                live = _LIVE.get(key, [])
                now = walks(live)
                if now != last_walks:
                    last_walks = now
                    out[map_output] = draw_map(value, now)
                    if legend_output is not None:
                        out[legend_output] = legend_html(live)
            yield out
        _LIVE.pop(key, None)

    inputs = [state, pick] + ([vision] if vision is not None else []) + [games]
    outputs = outputs + [games]
    if vision is None:
        async def run_text(value, names_v, games_v, request: gr.Request):
            async for out in run_models(value, names_v, False, games_v, request):
                yield out
        fn: Callable[..., Any] = run_text
    else:
        fn = run_models
    event = run.click(fn, inputs, outputs, concurrency_limit=None, js=show_js)
    _clear_on_new_instance(state, cols, key_of)
    return Panel(prefix, pick, vision, run, stop, actions, cols, fn, inputs, outputs, [event], show_js)


def wire_stop(panel: Panel, draw_map=None, state=None, map_output=None) -> None:
    """Stop cancels every run of the panel (Run, the race, "Show me the difference") and marks the
    columns stopped."""
    def on_stop(value, request: gr.Request):
        columns = stopped_columns((getattr(request, "session_hash", None), panel.prefix))
        if columns is None:
            return gr.skip()
        # stopped columns have run, so each has its instance
        out = {col: c.html(c.instance.task) for col, c in zip(panel.cols, columns)}  # type: ignore[union-attr]
        if draw_map is not None and value is not None:
            out[map_output] = draw_map(value, walks(columns))
        return out

    panel.stop.click(on_stop, [state] if state is not None else None, panel.outputs, cancels=panel.events)


def add_gp_models(ctx, gp: dict, games) -> None:
    def instance_of(t, vl):
        return Instance(_gp_task(vl), {"deal_id": t.deal_id, "rule": t.rule})

    with gp["models_slot"]:
        panel = _panel(ctx, gp["state"], games, "gp", vision_task=_gp_task(True),
                       vision_label="Vision variant (GP-VL: table image)", make_instance=instance_of,
                       nothing_yet="Deal a hand first.", key_of=lambda t: (t.deal_id, t.rule), task=_gp_task(False),
                       columns_in=gp["columns_slot"],  # the columns sit beside "You play"
                       show_id="gp-info")              # Run shows the hand with the columns under it
        difference_panel.add(ctx, panel, gp, task_of=lambda t, vl: _gp_task(vl),
                             choice_of=lambda t: {"rule": t.rule, "suits": t.suits} if t else {},
                             state_of=_gp_table_from)
    race.add(panel, gp)
    wire_stop(panel, state=gp["state"])
    if panel.vision is not None:
        panel.vision.change(lambda vl, ticked: picked_for(ctx, _gp_task(vl), ticked), [panel.vision, panel.pick],
                            panel.pick, show_progress="hidden")
    landing.add(ctx, gp["finding_slot"], _gp_task(False),
                [(panel.vision, lambda vl: _gp_task(vl))] if panel.vision is not None else [])


def _gp_task(vision: bool) -> str:
    """24 Points plays GP-L, or GP-VL with the vision variant (the registry's GP tasks)."""
    return task_name("gp", vision)


def _virl_task(view: str) -> str:
    """V-IRL plays V-IRL-L on the text view, V-IRL-VL on the street views."""
    return task_name("virl", view == "image")


def _gp_table_from(params: dict, table):
    suits = table.suits if table is not None else "mixed"
    return Table(params["deal_id"], params["rule"], None, suits, table.mode if table is not None else "paper")


def add_virl_models(ctx, virl: dict, games) -> None:
    def draw_map(walk, model_walks):
        return vp.map_image(vp.episode_of(walk), walk.source, model_walks)

    with virl["models_slot"]:
        # One vision toggle on this tab: the Observation choice (text / street views) is what you
        # see and what the models get.
        panel = _panel(ctx, virl["state"], games, "virl", vision_task=None, vision_label="",
                       make_instance=lambda w, vl: Instance(
                           _virl_task(w.view),
                           {"source": w.source, "route": w.route, "seed": w.seed, "absolute_action": w.absolute}),
                       nothing_yet="Start a route first.", key_of=lambda w: (w.source, w.route, w.absolute, w.seed),
                       task=_virl_task("text"), draw_map=draw_map, map_output=virl["map"],
                       legend_output=virl["legend"], columns_in=virl["columns_slot"], show_id="virl-difference-slot virl-columns-slot")
        difference_panel.add(ctx, panel, virl, task_of=lambda w, vl: _virl_task(w.view if w else "text"),
                             choice_of=lambda w: {"absolute_action": w.absolute, "source": w.source} if w else {},
                             state_of=lambda params, w: vp.Walk(params["source"], int(params["route"]),
                                                                bool(params["absolute_action"]),
                                                                int(params.get("seed") or 0),
                                                                view=w.view if w is not None else "text"))
    wire_stop(panel, draw_map=draw_map, state=virl["state"], map_output=virl["map"])
    virl["view"].change(lambda view, ticked: picked_for(ctx, _virl_task(view), ticked), [virl["view"], panel.pick],
                        panel.pick, show_progress="hidden")
    landing.add(ctx, virl["finding_slot"], _virl_task("text"), [(virl["view"], _virl_task)])


def _clear_on_new_instance(state, cols, key_of) -> None:
    last = gr.State(None)

    def maybe_clear(value, previous):
        key = key_of(value) if value is not None else None
        if key == previous:
            return gr.skip()
        return {**{c: "" for c in cols}, last: key}

    state.change(maybe_clear, [state, last], [*cols, last], show_progress="hidden")
