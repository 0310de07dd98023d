"""The Inspect tab: stored episodes with filters (task, model, outcome, failure class, "only where
the models disagree"), a step-by-step replay that needs no model, and JSONL / Markdown / bundle
exports of what is shown."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from ..export import bundle, episode_jsonl, episode_markdown
from .common import badge, error_html, esc, outcome_badge, query_params

TASKS = ["any", "gp-l", "gp-vl", "virl-l", "virl-vl"]
FAILURE_CLASSES = [
    ("any", "any"), ("GP: wrong cards read", "wrong_cards"), ("GP: illegal formula", "illegal_formula"),
    ("GP: wrong numbers", "wrong_numbers"), ("GP: several errors", "aggregated_error"),
    ("GP: wrong value", "wrong_value"), ("GP: partial", "partial"), ("GP: float rounding", "float_rounding"),
    ("GP: step limit", "step_limit"), ("V-IRL: wrong action", "wrong_action"),
    ("V-IRL: wrong observation", "wrong_observation"), ("V-IRL: budget exceeded", "budget_exceeded"),
]
SCAN_LIMIT = 2000
COLUMNS = ["episode", "task", "model", "instance", "result", "tries", "return", "failure classes"]


def filtered_episodes(store, *, task="any", model="any", result="any", failure="any",
                      disagree=False, episode_id: str | None = None, run: str | None = None,
                      split: str | None = None) -> list[dict]:
    """Episodes (newest first) matching the filters, each with `classes` (its steps' outcomes)."""
    if episode_id:
        ep = store.get_episode(episode_id, steps=True, prompts=False)
        return [_with_classes(ep)] if ep else []
    kwargs = {}
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
    eps = list(store.iter_episodes(**kwargs))[-SCAN_LIMIT:]
    eps.reverse()
    out = []
    for ep in eps:
        full = store.get_episode(ep["id"], steps=True, prompts=False)
        if full is None:
            continue
        full = _with_classes(full)
        if failure != "any" and failure not in full["classes"]:
            continue
        out.append(full)
    if disagree:
        groups: dict[str, set] = {}
        for ep in store_group_results(store, {e["group_id"] for e in out}):
            groups.setdefault(ep["group_id"], set()).add(bool(ep["success"]))
        out = [e for e in out if len(groups.get(e["group_id"], ())) > 1]
    return out


def store_group_results(store, group_ids) -> list[dict]:
    rows = []
    for gid in group_ids:
        rows += store.list_episodes(group_id=gid, limit=50)
    return rows


def _with_classes(ep: dict) -> dict:
    ep = dict(ep)
    ep["classes"] = sorted({s["outcome"] for s in ep.get("steps") or [] if s["outcome"] != "correct"})
    return ep


def table_rows(episodes: list[dict]) -> list[list]:
    rows = []
    for ep in episodes:
        result = {True: "solved", False: "failed"}.get(ep.get("success"), ep.get("status"))
        rows.append([ep["id"], ep["task"], ep["participant"], ep["instance_key"], result, ep["n_steps"],
                     round(ep["episode_return"], 2), ", ".join(ep["classes"])])
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


def build(ctx) -> dict:
    store = ctx.store
    current = gr.State([])
    with gr.Row(elem_classes="sv-controls"):
        task = gr.Dropdown(TASKS, value="any", label="Task", elem_id="inspect-task")
        model = gr.Dropdown(["any", *ctx.pool.names, "human"], value="any", label="Model",
                            allow_custom_value=True, elem_id="inspect-model")
        result = gr.Dropdown(["any", "solved", "failed"], value="any", label="Result", elem_id="inspect-result")
        failure = gr.Dropdown(FAILURE_CLASSES, value="any", label="Failure class", elem_id="inspect-failure")
        disagree = gr.Checkbox(label="Only where the models disagree", value=False, elem_id="inspect-disagree")
    with gr.Row(elem_classes="sv-actions"):
        refresh = gr.Button("Show episodes", variant="primary", elem_id="inspect-refresh")
        exp_jsonl = gr.Button("Export JSONL", elem_id="inspect-export-jsonl")
        exp_md = gr.Button("Export Markdown", elem_id="inspect-export-md")
        exp_zip = gr.Button("Export replay bundle (zip)", elem_id="inspect-export-zip")
    summary = gr.HTML("", elem_id="inspect-summary")
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, wrap=True, elem_id="inspect-table",
                         max_height=360)
    download = gr.File(label="Download", visible=False, elem_id="inspect-download")
    with gr.Row():
        pick = gr.Dropdown([], label="Episode to replay", scale=3, elem_id="inspect-pick")
        step = gr.Slider(1, 6, value=1, step=1, label="Try", scale=2, elem_id="inspect-step")
    replay = gr.HTML("", elem_id="inspect-replay")

    def on_refresh(task_v, model_v, result_v, failure_v, disagree_v):
        eps = filtered_episodes(store, task=task_v, model=model_v, result=result_v, failure=failure_v,
                                disagree=disagree_v)
        n = len(eps)
        choices = [(f'{e["participant"]} · {e["instance_key"]} · {e["id"][:8]}', e["id"]) for e in eps[:500]]
        msg = f'<div class="sv-info">{n} episode{"s" * (n != 1)} match.</div>'
        return (eps, msg, table_rows(eps), gr.Dropdown(choices=choices, value=choices[0][1] if choices else None),
                gr.File(visible=False))

    outputs = [current, summary, table, pick, download]
    refresh.click(on_refresh, [task, model, result, failure, disagree], outputs)

    def on_pick(eps, episode_id):
        ep = next((e for e in eps if e["id"] == episode_id), None)
        if ep is None and episode_id:
            found = filtered_episodes(store, episode_id=episode_id)
            ep = found[0] if found else None
        if ep is None:
            return gr.Slider(), ""
        n = max(1, len(ep.get("steps") or []))
        return gr.Slider(minimum=1, maximum=max(n, 2), value=1, step=1), step_html(ep, 0)

    pick.change(on_pick, [current, pick], [step, replay])

    def on_step(eps, episode_id, k):
        ep = next((e for e in eps if e["id"] == episode_id), None)
        return step_html(ep, int(k) - 1) if ep else ""

    step.change(on_step, [current, pick, step], replay, show_progress="hidden")

    def exporter(kind):
        def run(eps):
            if not eps:
                return gr.File(visible=False), error_html("Nothing to export: show some episodes first.")
            return gr.File(value=_export(eps, kind), visible=True), gr.skip()
        return run

    exp_jsonl.click(exporter("jsonl"), current, [download, summary])
    exp_md.click(exporter("md"), current, [download, summary])
    exp_zip.click(exporter("zip"), current, [download, summary])

    def on_load(request: gr.Request):
        params = query_params(request)
        episode_id, run = params.get("episode"), params.get("run")
        if not episode_id and not run:
            return (gr.skip(),) * 5
        if episode_id:
            eps = filtered_episodes(store, episode_id=episode_id)
        else:
            eps = filtered_episodes(store, run=run, model=params.get("model", "any"), split=params.get("split"))
        if not eps:
            what = f"episode {episode_id!r}" if episode_id else f"episodes of run {run!r}"
            return ([], error_html(f"No stored {what}."), [], gr.skip(), gr.skip())
        choices = [(f'{e["participant"]} · {e["instance_key"]} · {e["id"][:8]}', e["id"]) for e in eps]
        return (eps, "", table_rows(eps), gr.Dropdown(choices=choices, value=eps[0]["id"]), gr.skip())

    return {"on_load": on_load, "load_outputs": outputs}
