"""Model columns: SFT, RL (and any extra configured model) playing the instance on screen, side by
side and at the same time, as a live group started through the service layer (`app.services`).

Each column is rebuilt from the runner's events: one collapsible step per try with the reply
(streaming), the parsed fields, the reward and its failure class, the verifier's feedback and
timing, then the final outcome badge. Columns are independent: a slow or dead model only
affects its own column (its error is shown there).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import gradio as gr

from game.tasks import Instance, InstanceError, get_task

from .. import services
from .common import badge, error_html, esc, outcome_badge

MAX_COLUMNS = 3
RACE_CLOCK_JS = """
(...args) => {
  const start = Date.now();
  clearInterval(window.__svRaceTimer);
  window.__svRaceTimer = setInterval(() => {
    const clock = document.getElementById('gp-race-clock');
    if (document.querySelector('#gp-verdict .sv-race-result') || !clock) { clearInterval(window.__svRaceTimer); return; }
    clock.textContent = ((Date.now() - start) / 1000).toFixed(1) + ' s';
  }, 100);
  return args;
}
"""
REFRESH_S = 0.08  # at most ~12 screen updates per second while text streams


@dataclass
class StepView:
    call: int
    text: str = ""
    result: dict | None = None


@dataclass
class Column:
    """What one model's column shows, built from runner events."""

    name: str
    label: str
    episode_id: str | None = None
    steps: list[StepView] = field(default_factory=list)
    finished: dict | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.perf_counter)
    solved_after_s: float | None = None

    def apply(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "started":
            self.episode_id = ev["episode_id"]
        elif kind == "prompt":
            self.steps.append(StepView(ev["call"]))
        elif kind == "delta" and self.steps:
            self.steps[-1].text += ev["text"]
        elif kind == "step":
            if not self.steps or self.steps[-1].call != ev["call"]:
                self.steps.append(StepView(ev["call"]))
            self.steps[-1].text = ev["output"]
            self.steps[-1].result = ev
            if ev.get("terminated") and ev.get("reward", 0) > 0 and self.solved_after_s is None:
                self.solved_after_s = time.perf_counter() - self.started_at
        elif kind == "finished":
            self.finished = ev
            if ev.get("error"):
                self.error = ev["error"]

    def html(self, task: str) -> str:
        head = f'<div class="sv-col-head"><b>{esc(self.label)}</b> {self._outcome(task)}</div>'
        body = "".join(self._step_html(s, i == len(self.steps) - 1, task) for i, s in enumerate(self.steps)
                       if s.result is not None or not self.error)
        if self.error:
            body += error_html(f"{self.label}: {self.error}")
        link = ""
        if self.episode_id and self.finished:
            link = (f'<div class="sv-dim"><a href="?tab=inspect&episode={esc(self.episode_id)}" '
                    f'target="_self">inspect episode {esc(self.episode_id[:8])}</a></div>')
        return f'<div class="sv-col" data-model="{esc(self.name)}" data-done="{str(bool(self.finished)).lower()}">' \
               f'{head}{body}{link}</div>'

    def _outcome(self, task: str) -> str:
        if self.error:
            return badge("bad", "Error")
        if not self.finished:
            return badge("info", f"try {len(self.steps)}…" if self.steps else "waiting…")
        if self.finished.get("success"):
            n = sum(1 for s in self.steps if s.result)
            when = f" in {self.solved_after_s:.1f} s" if self.solved_after_s else ""
            won, _lost = get_task(task).words
            return badge("ok", f"{won} at try {n}{when}")
        return badge("bad", get_task(task).words[1])

    def _step_html(self, step: StepView, last: bool, task: str) -> str:
        r = step.result
        if r is None:
            return (f'<details class="sv-step" open><summary>Try {step.call} · generating…</summary>'
                    f'<pre>{esc(step.text)}</pre></details>')
        ok = r.get("reward", 0) > 0
        parsed = r.get("parsed") or {}
        fields = " · ".join(f"{label} <code>{esc(value)}</code>" for label, value in get_task(task).step_fields(parsed))
        timing = r.get("timing") or {}
        t_bits = []
        if timing.get("time_to_first_token_s") is not None:
            t_bits.append(f'TTFT {timing["time_to_first_token_s"] * 1000:.0f} ms')
        if timing.get("tokens_per_s"):
            t_bits.append(f'{timing["tokens_per_s"]:.0f} tok/s')
        if not r.get("graded", True):
            t_bits.append("budget spent: this reply was not graded")
        extra = ""
        if r.get("float_rejected"):
            extra = '<div class="sv-warn-text">correct, rejected by float rounding</div>'
        return (f'<details class="sv-step {"sv-step-ok" if ok else "sv-step-bad"}"{" open" if last else ""}>'
                f'<summary>Try {r["call"]} · {outcome_badge(r.get("outcome", ""))} reward {r.get("reward", 0):+g}'
                f'</summary><pre>{esc(step.text)}</pre><div>{fields}</div>'
                f'<div>Feedback: <q>{esc(r.get("feedback"))}</q></div>{extra}'
                f'<div class="sv-dim">{" · ".join(t_bits)}</div></details>')


def _labels(ctx, names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = ctx.pool.spec(n).label or n
        except Exception:  # noqa: BLE001 - an unknown model is reported in its column
            out[n] = n
    return out


async def stream_columns(ctx, instance: Instance, names: list[str]):
    """Yield a tuple of column HTML (MAX_COLUMNS long) as the runner's events arrive."""
    names = list(dict.fromkeys(names))[:MAX_COLUMNS]
    labels = _labels(ctx, names)
    columns = {n: Column(n, labels[n]) for n in names}
    blank = [""] * MAX_COLUMNS

    def render() -> tuple:
        out = [columns[n].html(instance.task) for n in names]
        return tuple(out + blank[len(out):])

    players = []
    for n in names:
        try:
            players.append(services.model_player(ctx, n, instance.task))
        except Exception as exc:  # noqa: BLE001 - not configured for the task, a missing checkpoint: its column
            columns[n].error = str(exc) or type(exc).__name__
            columns[n].finished = {}
    yield render()
    if not players:
        return
    try:
        group = await services.start_group(ctx, instance, players, {"source": "ui"})
    except services.ServiceError as exc:
        for p in players:
            columns[p.name].error, columns[p.name].finished = str(exc), {}
        yield render()
        return
    by_episode: dict[str, str] = {}
    last = 0.0
    try:
        async for _index, ev in group.subscribe():
            if ev is None:
                continue
            if ev["type"] == "started":
                by_episode[ev["episode_id"]] = ev["participant"]
            name = by_episode.get(ev.get("episode_id"))
            if name in columns:
                columns[name].apply(ev)
            now = time.perf_counter()
            if ev["type"] != "delta" or now - last >= REFRESH_S:
                last = now
                yield render()
    finally:  # the page stopped listening (Stop, a new deal): stop the group too
        if not group.done and group.task is not None:
            group.task.cancel()
    yield render()


def _model_controls(ctx, prefix: str, task_hint: str):
    names = ctx.pool.names
    default = [n for n in ("sft", "rl") if n in names] or names[:2]
    with gr.Row(elem_classes="sv-actions"):
        pick = gr.CheckboxGroup(names, value=default, label="Models", scale=3,
                                elem_id=f"{prefix}-model-pick")
        vision = gr.Checkbox(label=task_hint, value=False, scale=2, elem_id=f"{prefix}-vision")
        run = gr.Button("Run models (R)", variant="primary", scale=1, elem_id=f"{prefix}-run")
        race = gr.Button("Race them", scale=1, elem_id=f"{prefix}-race", visible=prefix == "gp")
        stop = gr.Button("Stop", scale=1, elem_id=f"{prefix}-stop")
    if ctx.pool.error:
        gr.HTML(error_html(f"Model configuration problem: {ctx.pool.error}"))
    with gr.Row(elem_classes="sv-columns", equal_height=False):
        cols = [gr.HTML("", elem_id=f"{prefix}-col-{i}", elem_classes="sv-model-col") for i in range(MAX_COLUMNS)]
    return pick, vision, run, race, stop, cols


def _wire(ctx, state, prefix: str, vision_label: str, make_instance, nothing_yet: str, key_of):
    """Controls + columns for one tab: `make_instance(state_value, vision)` builds the instance.
    Returns (race button, the models' run function, inputs, columns) for the tab to build on."""
    pick, vision, run, race, stop, cols = _model_controls(ctx, prefix, vision_label)

    async def run_models(value, names, vl):
        if value is None or not names:
            msg = nothing_yet if value is None else "Pick at least one model."
            yield (error_html(msg),) + ("",) * (MAX_COLUMNS - 1)
            return
        try:
            instance = make_instance(value, vl)
        except InstanceError as exc:
            yield (error_html(str(exc)),) + ("",) * (MAX_COLUMNS - 1)
            return
        async for update in stream_columns(ctx, instance, names):
            yield update

    event = run.click(run_models, [state, pick, vision], cols, concurrency_limit=None)
    stop.click(None, None, None, cancels=[event])
    # A new hand, a flipped rule or another route clears the columns (they showed the old instance).
    _clear_on_new_instance(state, cols, key_of)
    return race, stop, run_models, [state, pick, vision], cols


def add_gp_models(ctx, gp: dict) -> None:
    gr.Markdown("### Models on this hand", elem_id="gp-models-title")
    race, stop, run_models, inputs, cols = _wire(
        ctx, gp["state"], "gp", "Vision variant (GP-VL: the model sees the table image)",
        lambda t, vl: Instance("gp-vl" if vl else "gp-l", {"deal_id": t.deal_id, "rule": t.rule}),
        "Deal a hand first.", lambda t: (t.deal_id, t.rule))

    # Race: you against the models on this hand. The page shows a running clock; your time is
    # measured on the server from the start to your correct check, the models' in their columns.
    def start_race(table):
        if table is None:
            return None, gr.skip(), gr.skip()
        return ((table.deal_id, table.rule, time.time()), "",
                '<div class="sv-race">Race on: <b id="gp-race-clock">0.0 s</b> — solve it before the models do!</div>')

    race_event = race.click(start_race, gp["state"], [gp["race"], gp["formula"], gp["verdict"]], js=RACE_CLOCK_JS
                            ).then(run_models, inputs, cols, concurrency_limit=None)
    stop.click(None, None, None, cancels=[race_event])


def add_virl_models(ctx, virl: dict) -> None:
    gr.Markdown("### Models on this route", elem_id="virl-models-title")
    _wire(ctx, virl["state"], "virl", "Vision variant (V-IRL-VL: street views)",
          lambda w, vl: Instance("virl-vl" if vl else "virl-l", {"source": w.source, "route": w.route,
                                                                 "seed": w.seed, "absolute_action": w.absolute}),
          "Start a route first.", lambda w: (w.source, w.route, w.absolute, w.seed))


def _clear_on_new_instance(state, cols, key_of) -> None:
    last = gr.State(None)

    def maybe_clear(value, previous):
        key = key_of(value) if value is not None else None
        if key == previous:
            return (gr.skip(),) * MAX_COLUMNS + (previous,)
        return ("",) * MAX_COLUMNS + (key,)

    state.change(maybe_clear, [state, last], [*cols, last], show_progress="hidden")
