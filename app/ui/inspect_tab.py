"""The Inspect tab: stored episodes with filters (task, model, outcome, failure class: the registry's
tasks and outcomes when the page is built; "only where the models disagree"), a step-by-step replay
that needs no model, and JSONL / Markdown / bundle exports of what is shown. It lists the newest
episodes when opened; its filters live in the link (`?tab=inspect&model=sft&result=failed`), so an
Evaluate link lands with the filters it applied.

What a visitor sees is the service layer's rule for its `Caller` (`common.visitor`, with the game
tokens the page keeps): on a public server its own games and the evaluation episodes — listed, opened
by link (`?tab=inspect&episode=ID`) and exported alike; exporting more than the episode on screen is
a bulk export, which needs the operator token there (as `GET /api/export/episodes` does)."""
from __future__ import annotations

import tempfile
from typing import Any
from pathlib import Path

import gradio as gr

from game.tasks import TASKS as REGISTRY

from .. import findings, services
from ..export import bundle, episode_jsonl, episode_markdown
from .common import (URL_UPDATE_JS, badge, error_html, esc, note_html, outcome_badge, outcome_label, query_params,
                     visitor)

# The failure classes of the paper's two games, in the words the filter shows them; any other
# registered task's outcomes follow these (`failure_classes`), named by the task.
FAILURE_WORDS = {
    "wrong_cards": "GP: wrong cards read", "illegal_formula": "GP: illegal formula",
    "wrong_numbers": "GP: wrong numbers", "aggregated_error": "GP: several errors",
    "wrong_value": "GP: wrong value", "partial": "GP: partial", "float_rounding": "GP: float rounding",
    "step_limit": "GP: step limit", "wrong_action": "V-IRL: wrong action",
    "wrong_observation": "V-IRL: wrong observation", "budget_exceeded": "V-IRL: budget exceeded",
}


def task_choices() -> list[str]:
    """The task filter's values: any, then every task of the registry as it is now."""
    return ["any", *REGISTRY]


def failure_classes() -> list[tuple[str, str]]:
    """The failure-class filter's (label, outcome) pairs: every outcome of the registered tasks but
    `correct`, in `FAILURE_WORDS`' words and order, then the other tasks' own (named by the task)."""
    found: dict[str, str] = {}
    for spec in REGISTRY.values():
        who = spec.findings.short if spec.findings is not None else spec.name
        for outcome in spec.outcomes:
            if outcome != "correct":
                found.setdefault(outcome, FAILURE_WORDS.get(outcome) or f"{who}: {outcome_label(outcome).lower()}")
    known = [o for o in FAILURE_WORDS if o in found] + [o for o in found if o not in FAILURE_WORDS]
    return [("any", "any"), *((found[o], o) for o in known)]

SCAN_LIMIT = 2000
COLUMNS = ["id", "task", "model", "instance", "result", "tries", "return", "failures"]
RESULTS = ["any", "solved", "failed"]


class Matches(list):
    """Episodes that match (newest first), and how far the search looked: the store's filters (task,
    model, result, run, split) matched `total` episodes, of which the newest `SCAN_LIMIT` were read
    (`capped` when that is fewer than all)."""

    total: int = 0

    @property
    def capped(self) -> bool:
        return self.total > SCAN_LIMIT


def filtered_episodes(store, *, task="any", model="any", result="any", failure="any",
                      disagree=False, episode_id: str | None = None, run: str | None = None,
                      split: str | None = None, visible_groups: set[str] | None = None) -> Matches:
    """Episodes (newest first) matching the filters, each with `classes` (its steps' outcomes).
    `visible_groups` is the store's listing filter (`services.visible_scope`: None for everything,
    else evaluation episodes and these groups only); `total` counts only what it lets through."""
    if episode_id:
        ep = store.get_episode(str(episode_id)[:128], steps=True, prompts=False)
        if ep is not None and visible_groups is not None and ep.get("eval_run_id") is None \
                and ep["group_id"] not in visible_groups:
            ep = None
        found = Matches([_with_classes(ep)] if ep else [])
        found.total = len(found)
        return found
    kwargs: dict = {"visible_groups": visible_groups}
    if task != "any":
        kwargs["task"] = task
    if model != "any":
        kwargs["participant"] = model
    if result in ("solved", "failed"):
        kwargs["success"] = result == "solved"
    if run:
        kwargs["eval_run_id"] = run
    if split:
        kwargs["eval_split"] = split
    everything = list(store.iter_episodes(**kwargs))
    eps = everything[-SCAN_LIMIT:]
    eps.reverse()
    out = Matches()
    out.total = len(everything)
    for ep in eps:
        full = store.get_episode(ep["id"], steps=True, prompts=False)
        if full is None:
            continue
        full = _with_classes(full)
        if failure != "any" and failure not in full["classes"]:
            continue
        out.append(full)
    if disagree:  # finished episodes only: an interrupted one has no result to disagree with
        out[:] = [e for e in out if e.get("status") == "finished"]
        groups: dict[str, set] = {}
        for ep in store_group_results(store, {e["group_id"] for e in out}):
            if ep.get("status") == "finished":
                groups.setdefault(ep["group_id"], set()).add(bool(ep["success"]))
        out[:] = [e for e in out if len(groups.get(e["group_id"], ())) > 1]
    return out


def summary_text(eps: Matches, narrowed: bool) -> str:
    """How many episodes match, saying so when the search stopped at the newest `SCAN_LIMIT`
    (`narrowed`: a failure-class or disagreement filter applied to those)."""
    n = len(eps)
    if not eps.capped:
        return f"{n:,} episode{'s' * (n != 1)} match"
    if narrowed:
        return (f"{n:,} episode{'s' * (n != 1)} match among the newest {SCAN_LIMIT:,} of the {eps.total:,} with "
                f"this task, model and result (narrow those to look further back)")
    return (f"{eps.total:,} episodes match; the newest {n:,} are listed (narrow the filters to list the "
            f"others)")


def store_group_results(store, group_ids) -> list[dict]:
    rows = []
    for gid in group_ids:
        rows += store.list_episodes(group_id=gid, limit=50)
    return rows


def _with_classes(ep: dict) -> dict:
    ep = dict(ep)
    ep["classes"] = sorted({s["outcome"] for s in ep.get("steps") or [] if s["outcome"] != "correct"})
    return ep


_RESULT_WORDS: dict[Any, str] = {True: "solved", False: "failed"}


def table_rows(episodes: list[dict]) -> list[list]:
    rows = []
    for ep in episodes:
        result = _RESULT_WORDS.get(ep.get("success"), ep.get("status"))
        rows.append([ep["id"][:8], ep["task"], ep["participant"], ep["instance_key"], result, ep["n_steps"],
                     round(ep["episode_return"], 2), ", ".join(outcome_label(c) for c in ep["classes"])])
    return rows


def step_html(ep: dict, index: int) -> str:
    steps = ep.get("steps") or []
    if not steps:
        return '<div class="sv-dim">This episode has no steps.</div>'
    index = max(0, min(index, len(steps) - 1))
    s = steps[index]
    head = (f'<div class="sv-info"><b>{esc(ep["participant"])}</b> · {esc(ep["task"])} · '
            f'<code>{esc(ep["instance_key"])}</code> · try {s["call"]} of {len(steps)} '
            f'{badge("ok", "solved") if ep.get("success") else badge("bad", "not solved") if ep.get("success") is False else ""}</div>')
    parsed = s.get("parsed") or {}
    fields = " · ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in parsed.items() if v not in (None, "", []))
    extra = '<div class="sv-warn-text">correct, rejected by float rounding</div>' if s.get("float_rejected") else ""
    return (f'{head}<div class="sv-step {"sv-step-ok" if s["reward"] > 0 else "sv-step-bad"}">'
            f'{outcome_badge(s["outcome"])} reward {s["reward"]:+g}<pre>{esc(s["output"])}</pre>'
            f'<div>{fields}</div><div>Feedback: <q>{esc(s["feedback"])}</q></div>{extra}</div>')


def _export(episodes: list[dict], kind: str) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="sftvsrl-export-"))
    if kind == "jsonl":
        path = tmp / "episodes.jsonl"
        path.write_text("".join(episode_jsonl(episodes)), encoding="utf-8")
    elif kind == "md":
        path = tmp / "episodes.md"
        path.write_text("\n\n".join(episode_markdown(e) for e in episodes), encoding="utf-8")
    else:
        path = tmp / "episodes-bundle.zip"
        path.write_bytes(bundle(episodes, title="Inspect export"))
    return str(path)


def build(ctx, tab=None, games=None) -> dict:
    """The tab's content; `tab` (its gr.Tab) lists episodes when it is opened and nothing is listed;
    `games` (`common.games_state`) are the page's game tokens: whose episodes it may see."""
    store = ctx.store
    games = games if games is not None else gr.State([])
    current = gr.State([])
    link = gr.JSON({"tab": "inspect"}, visible=False)
    with gr.Row(elem_classes="sv-controls"):
        task = gr.Dropdown(task_choices(), value="any", label="Task", elem_id="inspect-task", min_width=120)
        model = gr.Dropdown(["any", *ctx.pool.names, "human"], value="any", label="Model",
                            allow_custom_value=True, elem_id="inspect-model", min_width=120)
        result = gr.Dropdown(RESULTS, value="any", label="Result", elem_id="inspect-result", min_width=110)
        failure = gr.Dropdown(failure_classes(), value="any", label="Failure class", elem_id="inspect-failure",
                              min_width=200)
        disagree = gr.Checkbox(label="Only where the models disagree", value=False, elem_id="inspect-disagree")
    with gr.Row(elem_classes="sv-actions"):
        refresh = gr.Button("Show episodes", variant="primary", elem_id="inspect-refresh")
        exp_jsonl = gr.Button("Export JSONL", elem_id="inspect-export-jsonl")
        exp_md = gr.Button("Export Markdown", elem_id="inspect-export-md")
        exp_zip = gr.Button("Export replay bundle (zip)", elem_id="inspect-export-zip")
    summary = gr.HTML("", elem_id="inspect-summary", elem_classes="sv-collapse")
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, wrap=True, elem_id="inspect-table",
                         max_height=360)
    download = gr.File(label="Download", visible=False, elem_id="inspect-download")
    with gr.Row():
        pick = gr.Dropdown([], label="Episode to replay", scale=3, elem_id="inspect-pick")
        step = gr.Slider(1, 6, value=1, step=1, label="Try", scale=2, elem_id="inspect-step")
    replay = gr.HTML("", elem_id="inspect-replay", elem_classes="sv-collapse")
    scope = gr.State({})  # run / split / episode from a link (no control of their own)

    def show(who, filters: dict, note: str = "") -> dict:
        """List what the filters select for caller `who`; every filter goes back into its control
        and the link."""
        eps = filtered_episodes(store, task=filters["task"], model=filters["model"], result=filters["result"],
                                failure=filters["failure"], disagree=filters["disagree"],
                                episode_id=filters.get("episode"), run=filters.get("run"),
                                split=filters.get("split"), visible_groups=services.visible_scope(ctx, who))
        choices = [(f'{e["participant"]} · {e["instance_key"]} · {e["id"][:8]}', e["id"]) for e in eps[:500]]
        scoped = " · ".join(f"{k} {esc(filters[k])}" for k in ("run", "split", "episode") if filters.get(k))
        narrowed = filters["failure"] != "any" or bool(filters["disagree"])
        msg = (f'<div class="sv-info" data-total="{eps.total}" data-listed="{len(eps)}">'
               f'{esc(summary_text(eps, narrowed))}{" (" + scoped + ")" if scoped else ""}.</div>')
        params = {"tab": "inspect", **{k: v for k, v in filters.items() if v not in ("any", False, None, "")}}
        params["disagree"] = "1" if filters["disagree"] else ""
        return {current: list(eps), summary: note + msg, table: table_rows(eps),
                pick: gr.Dropdown(choices=choices, value=choices[0][1] if choices else None),
                download: gr.File(visible=False), link: params, task: filters["task"], model: filters["model"],
                result: filters["result"], failure: filters["failure"], disagree: filters["disagree"],
                scope: {k: filters[k] for k in ("run", "split", "episode") if filters.get(k)}}

    outputs = [current, summary, table, pick, download, link, task, model, result, failure, disagree, scope]

    def on_refresh(task_v, model_v, result_v, failure_v, disagree_v, scope_v, games_v, request: gr.Request):
        return show(visitor(ctx, request, games_v),
                    {"task": task_v, "model": model_v, "result": result_v, "failure": failure_v,
                     "disagree": bool(disagree_v), **(scope_v if isinstance(scope_v, dict) else {})})

    refresh.click(on_refresh, [task, model, result, failure, disagree, scope, games], outputs
                  ).then(None, link, None, js=URL_UPDATE_JS)

    def on_pick(eps, episode_id, games_v, request: gr.Request):
        # `eps` is what this page was shown (its state); anything else is looked up as the caller
        ep = next((e for e in eps or [] if isinstance(e, dict) and e.get("id") == episode_id), None)
        if ep is None and episode_id:
            found = filtered_episodes(store, episode_id=str(episode_id),
                                      visible_groups=services.visible_scope(ctx, visitor(ctx, request, games_v)))
            ep = found[0] if found else None
        if ep is None:
            return gr.Slider(), ""
        n = max(1, len(ep.get("steps") or []))
        # one try: nothing to slide through (a slider from 1 to 1 cannot be drawn: it is hidden)
        return gr.Slider(minimum=1, maximum=max(n, 2), value=1, step=1, visible=n > 1), step_html(ep, 0)

    pick.change(on_pick, [current, pick, games], [step, replay])

    def on_step(eps, episode_id, k):
        ep = next((e for e in eps or [] if isinstance(e, dict) and e.get("id") == episode_id), None)
        return step_html(ep, int(k) - 1) if ep else ""

    step.change(on_step, [current, pick, step], replay, show_progress="hidden")

    def exporter(kind):
        def run(eps, picked, games_v, request: gr.Request):
            """Export what is shown; where that is a bulk export the caller may not make (a public
            server without the operator token), the episode on screen only, as one episode's export."""
            who = visitor(ctx, request, games_v)
            shown = [e["id"] for e in eps or [] if isinstance(e, dict) and isinstance(e.get("id"), str)]
            if not shown:
                return {download: gr.File(visible=False),
                        summary: error_html("Nothing to export: show some episodes first.")}
            note = ""
            if len(shown) > 1 and not services.may_bulk_export(ctx, who):
                shown = [picked] if picked in shown else shown[:1]
                note = note_html("Exported the episode on screen: exporting several at once needs the operator "
                                 "token on this public server.")
            try:   # every exported episode is read again as this caller (the page's state is not trusted)
                episodes = [_with_classes(services.readable_episode(ctx, who, i)) for i in shown]
            except services.ServiceError as exc:
                return {download: gr.File(visible=False), summary: error_html(str(exc))}
            return {download: gr.File(value=_export(episodes, kind), visible=True), **({summary: note} if note else {})}
        return run

    for button, kind in ((exp_jsonl, "jsonl"), (exp_md, "md"), (exp_zip, "zip")):
        button.click(exporter(kind), [current, pick, games], [download, summary])

    def on_load(games_v, request: gr.Request):
        """The link's filters (or none: the newest episodes); unknown values are named, not dropped."""
        params = query_params(request)
        if params.get("tab") != "inspect":
            return gr.skip()  # listed when the tab is opened (no store scan for every page load)
        filters: dict[str, Any] = {"task": "any", "model": "any", "result": "any", "failure": "any", "disagree": False}
        problems = []
        allowed = {"task": task_choices(), "result": RESULTS, "failure": [v for _, v in failure_classes()]}
        for key in ("task", "model", "result", "failure"):
            value = params.get(key)
            if value is None:
                continue
            if key in allowed and value not in allowed[key]:
                problems.append(f"unknown {key} {value[:30]!r}")
            else:
                filters[key] = value[:64]
        filters["disagree"] = params.get("disagree") in ("1", "true")
        for key in ("run", "split", "episode"):
            if params.get(key):
                filters[key] = params[key][:64]
        findings.ensure_for_run(ctx, filters.get("run"))  # a Findings link: its episodes are imported on first use
        note = error_html("This link could not be fully restored: " + "; ".join(problems) + ".") if problems else ""
        who = visitor(ctx, request, games_v)
        out = show(who, filters, note)
        if (filters.get("episode") or filters.get("run")) and not out[current]:
            what = f"episode {filters['episode']!r}" if filters.get("episode") else f"episodes of run {filters['run']!r}"
            out[summary] = error_html(f"No stored {what}: it may come from another database.")
            if filters.get("episode"):
                try:   # say why when it exists but is not this visitor's
                    services.readable_episode(ctx, who, filters["episode"], steps=False)
                except services.Forbidden as exc:
                    out[summary] = error_html(str(exc))
                except services.ServiceError:
                    pass
        return out

    if tab is not None:
        def on_open(eps, summary_v, task_v, model_v, result_v, failure_v, disagree_v, scope_v, games_v,
                    request: gr.Request):
            """Opening the tab lists episodes unless some are listed. When the address names this tab
            (a link selects it on load, while `on_load` lists the link's filters; a click writes the
            tab's link first), it lists what the address says, so both give the same list (either
            as the page's visitor)."""
            if eps or summary_v:
                return gr.skip()
            if query_params(request).get("tab") == "inspect":
                return on_load(games_v, request)
            return on_refresh(task_v, model_v, result_v, failure_v, disagree_v, scope_v, games_v, request)

        tab.select(on_open, [current, summary, task, model, result, failure, disagree, scope, games], outputs
                   ).then(None, link, None, js=URL_UPDATE_JS)
    return {"on_load": on_load, "load_inputs": [games], "load_outputs": outputs, "link": link}
