"""The Findings tab: the paper's finding in one screen, from the shipped pipeline evaluations
(`app.findings`: findings.json, offline), for each task with findings (GP-L, V-IRL-L, GP-VL,
V-IRL-VL: a selector, in the tab's link as `?tab=findings&task=virl-l`). The stage table, bars
with ± SE of the task's headline (GP episode success, V-IRL per-step accuracy) on every split for
each stage (Base, Init, SFT, RL, SFT-diverse where trained), the paper's reported numbers beside
ours, the paired differences, GP-VL's recognition accuracy, the compute curves and a
plain-language explanation a speaker can read out. Every bar and table
cell links to its episodes in the Inspect tab; opening a task's view starts importing them into
the store once, in a background thread (`app.findings.Importer`), never on the event loop. One
code path draws every task; what differs is the task's `findings` words in the registry
(`app.findings.view_words`) and the file's numbers."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from .. import findings as fd
from ..charts import pair_html
from .common import URL_UPDATE_JS, error_html, esc, query_params



def default_task() -> str:
    """The first task with staged findings (`app.findings.tasks`, the registry as it is now)."""
    return fd.tasks()[0]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _bar_html(label: str, value: float, se: float | None, href: str | None, kind: str, title: str,
              test_id: str) -> str:
    width = max(0.0, min(100.0, 100 * value))
    whisker = ""
    if se:
        lo, hi = max(0.0, 100 * (value - se)), min(100.0, 100 * (value + se))
        whisker = f'<span class="sv-fd-se" style="left:{lo:.2f}%;width:{hi - lo:.2f}%"></span>'
    text = f"{_pct(value)} %" + (f" ± {_pct(se)}" if se else "")
    inner = (f'<span class="sv-fd-label">{esc(label)}</span><span class="sv-fd-track">'
             f'<span class="sv-fd-fill sv-fd-{kind}" style="width:{width:.2f}%"></span>{whisker}</span>'
             f'<span class="sv-fd-value">{esc(text)}</span>')
    if href:
        return (f'<a class="sv-fd-bar" href="{esc(href)}" target="_self" title="{esc(title)}" '
                f'data-testid="{esc(test_id)}">{inner}</a>')
    return f'<div class="sv-fd-bar" title="{esc(title)}" data-testid="{esc(test_id)}">{inner}</div>'


def _cell_title(f: fd.Findings, cell: dict) -> str:
    """A V-IRL-L cell's detail (steps behind the per-step accuracy, and episode success)."""
    if f.metric == "success_rate":
        return ""
    parts = []
    if isinstance(cell.get("correct_steps"), int) and isinstance(cell.get("steps"), int):
        parts.append(f"{cell['correct_steps']} of {cell['steps']} actions correct")
    if isinstance(cell.get("success"), (int, float)):
        parts.append(f"episodes arrived: {_pct(cell['success'])} %")
    return "; ".join(parts)


def _table_html(f: fd.Findings) -> str:
    head = "".join(f"<th>{esc(fd.split_label(f.task, s))}</th>" for s in f.splits)
    rows = []
    with_kl = any("kl_from_init" in f.data["table"][stage] for stage in f.stages)   # the vision pipeline has none
    for stage in f.stages:
        row = f.data["table"][stage]
        cells = []
        for split in f.splits:
            cell = row.get(split)
            if not cell:
                cells.append("<td>—</td>")
                continue
            value = f.value(stage, split)
            assert value is not None  # the cell is there
            text = f"{_pct(value)} ± {_pct(cell.get('se') or 0)} %"
            title = _cell_title(f, cell)
            attr = f' title="{esc(title)}"' if title else ""
            link = fd.inspect_link(f.run_id, stage, split) if f.run_id else None
            cells.append(f'<td{attr}><a href="{esc(link)}" target="_self">{esc(text)}</a></td>' if link
                         else f"<td{attr}>{esc(text)}</td>")
        kl = row.get("kl_from_init")
        flops = (row.get("compute") or {}).get("flops")
        rows.append(f'<tr data-stage="{esc(stage)}"><th title="{esc(f.view.stage_notes.get(stage, ""))}">'
                    f'{esc(fd.STAGE_LABELS.get(stage, stage))}</th>{"".join(cells)}'
                    + (f'<td>{"—" if kl is None else f"{kl:.2f}"}</td>' if with_kl else "")
                    + f'<td>{"—" if not flops else f"{flops:.2e}"}</td></tr>')
    n = f.data.get("protocol", {}).get("episodes_per_split")
    if f.metric == "per_step_accuracy":
        what = ("Per-step accuracy (correct actions of all the model's calls, pooled over the episodes), ± binomial "
                f"standard error over the calls{f'; {n} episodes per split' if n else ''}; the routes and "
                "episode seeds are the protocol's seeded lists, the same for every stage.")
    else:
        what = (f"Episode success, ± binomial standard error{f', {n} episodes per split' if n else ''}; the hands "
                "are the protocol's seeded lists, the same for every stage.")
    kl_head = "<th>KL(Init ‖ model), nats</th>" if with_kl else ""
    return (f'<table class="sv-fd-table" id="findings-table"><thead><tr><th>stage</th>{head}'
            f'{kl_head}<th>training FLOPs</th></tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table><div class="sv-dim">{esc(what)} Each number opens its episodes in Inspect.</div>')


def _bars_html(f: fd.Findings) -> str:
    groups = []
    all_bars = fd.bars(f)
    for split in f.splits:
        items = [_bar_html(fd.STAGE_LABELS.get(b.stage, b.stage), b.value, b.se, b.link, b.stage,
                           f"{fd.STAGE_LABELS.get(b.stage, b.stage)} on {fd.split_label(f.task, split)}: open its {b.n} episodes in Inspect",
                           f"bar-{b.stage}-{b.split}")
                 for b in all_bars if b.split == split]
        paper = fd.paper_entry(f.task, split)
        if paper:
            items.append(f'<div class="sv-fd-paper-head">{esc(fd.PAPER_LABEL)} ({esc(paper["source"])})</div>')
            items += [_bar_html(f"{fd.STAGE_LABELS[s]} (paper)", v, None, None, "paper",
                                f"{fd.PAPER_LABEL}: {fd.STAGE_LABELS[s]} {_pct(v)} %", f"paper-{s}-{split}")
                      for s, v in fd.paper_bars(f.task, split)]
        groups.append(f'<div class="sv-fd-group" data-split="{esc(split)}"><h3>{esc(fd.split_label(f.task, split))}'
                      f'</h3>{"".join(items)}</div>')
    return (f'<div class="sv-fd-bars" id="findings-bars"><div class="sv-dim">{esc(f.metric_words.capitalize())}, '
            f'± one standard error; each bar opens its episodes in Inspect.</div>{"".join(groups)}</div>')


PAIRS = (("rl_minus_sft", "RL − SFT"), ("rl_minus_init", "RL − Init"), ("sft_minus_init", "SFT − Init"),
         ("sft_diverse_minus_sft", "SFT-diverse − SFT"))


def _paired_items(f: fd.Findings, of: str = "paired", prefix: str = "paired") -> str:
    """One <li> per paired comparison and split in the file's `of` block (headline or recognition)."""
    items = []
    for name, label in PAIRS:
        for split in f.splits:
            p = fd.paired(f, name, split, of=of)
            if p is None:
                continue
            z = p["diff"] / p["se"] if p.get("se") else 0.0
            items.append(f'<li data-testid="{prefix}-{esc(name)}-{esc(split)}"><b>{esc(label)}</b>, {esc(fd.split_label(f.task, split))}: '
                         f'{100 * p["diff"]:+.1f} ± {100 * p["se"]:.1f} points (z = {z:.1f}, n = {p["n"]})'
                         f'{" — beyond 2 SE" if abs(z) >= 2 else " — within 2 SE"}</li>')
    return "".join(items)


def _paired_html(f: fd.Findings) -> str:
    items = _paired_items(f)
    if not items:
        return ""
    return (f'<div class="sv-fd-paired" id="findings-paired"><h3>Paired differences of {esc(f.metric_words)} '
            f'(same {esc(f.view.instances)})</h3><ul>{items}</ul></div>')


def _recognition_html(f: fd.Findings) -> str:
    """GP-VL's recognition accuracy (paper §5.3) per stage and split, and RL − SFT of it."""
    rows = fd.recognition_rows(f)
    if not rows:
        return ""
    head = "".join(f"<th>{esc(fd.split_label(f.task, s))}</th>" for s in f.splits)
    body = "".join(
        f'<tr data-stage="{esc(stage)}"><th>{esc(fd.STAGE_LABELS.get(stage, stage))}</th>'
        + "".join(f"<td>{_pct(cells[s][0])} ± {_pct(cells[s][1] or 0)} %</td>" if s in cells else "<td>—</td>"
                  for s in f.splits) + "</tr>" for stage, cells in rows.items())
    diffs = _paired_items(f, of="paired_recognition", prefix="recognition")
    return (f'<div class="sv-fd-recognition" id="findings-recognition"><h3>Recognition accuracy (paper §5.3)</h3>'
            f'<table class="sv-fd-table"><thead><tr><th>stage</th>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<div class="sv-dim">The share of the model\'s replies whose <code>cards</code> name the four cards on '
            f'the table (the verifier\'s first check), ± binomial SE over the replies. Paired differences pool the '
            f'replies per hand (SE over hands).</div>{f"<ul>{diffs}</ul>" if diffs else ""}</div>')


# The curves' two PNGs (matplotlib: ~1 s of CPU a look, the rest of the view ~10 ms) drawn once per
# findings file: (file, mtime, size) -> HTML. A new findings file (another mtime or size) is drawn
# afresh; a race between two visitors draws it twice, harmlessly.
_CURVES: dict[tuple[str, int, int], str] = {}
_CURVES_KEPT = 16


def _stamp(path: Path) -> tuple[str, int, int] | None:
    """The findings file's identity, read *before* the file is loaded (a file replaced in between
    is then drawn again next time, never kept under the new file's stamp)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def _curves_once(f: fd.Findings, key: tuple[str, int, int] | None) -> str:
    if key is None:
        return _curves_html(f)
    html = _CURVES.get(key)
    if html is None:
        html = _curves_html(f)
        if len(_CURVES) >= _CURVES_KEPT:
            _CURVES.clear()
        _CURVES[key] = html
    return html


def _curves_html(f: fd.Findings) -> str:
    splits = ", ".join(fd.split_label(f.task, s) for s in f.splits)
    imgs = pair_html(lambda path, look: fd.curves_plot(f, path, look),
                     f"{f.metric_words} ({splits}) against training compute along SFT, RL and SFT-diverse")
    if not imgs:
        return '<div class="sv-dim">No snapshot curves in this evaluation.</div>'
    return (f'<figure class="sv-fd-curves" id="findings-curves">{imgs}'
            f'<figcaption class="sv-dim">{esc(f.metric_words.capitalize())} along training from Init against '
            f'training compute (the shape of the paper\'s Figure 5), and the base\'s own training where recorded. '
            f'Snapshots are scored on fewer episodes than the table.</figcaption></figure>')


def missing_html(task: str, folder: Path) -> str:
    cmd = fd.produce_command(task)
    return (f'<div class="sv-info" id="findings-missing" data-task="{esc(task)}"><b>No findings for {esc(task)} yet.</b> This view reads '
            f'<code>{esc(folder / task / fd.FINDINGS_FILE)}</code>, written by the staged training pipeline:'
            f'<pre>{esc(cmd)}</pre>then copy <code>findings.json</code> and '
            f'<code>{fd.EPISODES_FILE}</code> from its output folder to <code>{esc(folder / task)}/</code> '
            f'(or point <code>SFTVSRL_FINDINGS_DIR</code> at a folder holding <code>{esc(task)}/findings.json</code>).'
            f'</div>')


def view_html(ctx, task: str | None = None) -> str:
    """The whole view for `task` (default: `default_task()`); starts the import of its episodes
    (call from a worker thread)."""
    task = task or default_task()
    folder = fd.findings_dir(ctx.settings)
    stamp = _stamp(folder / task / fd.FINDINGS_FILE)
    try:
        f = fd.load(task, folder)
    except (fd.FindingsError, ValueError) as exc:
        return error_html(str(exc))
    if f is None:
        return missing_html(task, folder)
    note = ""
    importer = fd.importer_for(ctx)
    if f.run_id is not None and importer.start(task):
        note = ('<div class="sv-dim" id="findings-importing">Copying these episodes into the episode store for '
                'Inspect (first opening only; a link followed meanwhile waits for it).</div>')
    result = importer.done(task)
    if importer.failure(task):
        note = error_html(f"The numbers are shown, but their episodes could not be imported: {importer.failure(task)}")
    elif result is not None and result.mismatches:
        note = error_html(f"{result.mismatches} imported episode(s) replay to a different result than was "
                          "recorded: the game engine changed since this evaluation; re-run the pipeline.")
    if f.run_id is None:
        note += ('<div class="sv-dim">No episodes file ships with these findings, so the numbers do not link to '
                 'episodes.</div>')
    speaker = "".join(f"<li>{esc(line)}</li>" for line in fd.explanation(f))
    return (f'<div class="sv-fd" id="findings-root" data-task="{esc(task)}" data-run="{esc(f.run_id or "")}">'
            f'<h2>{esc(f.view.short)}: does SFT memorize and RL generalize? Our tiny models, and the paper</h2>'
            f'<div class="sv-verdict" id="findings-verdict">{esc(fd.verdict(f))}</div>{note}'
            f'<div class="sv-fd-row">{_bars_html(f)}<div class="sv-fd-side">{_table_html(f)}{_paired_html(f)}'
            f'{_recognition_html(f)}</div></div>{_curves_once(f, stamp)}'
            f'<details class="sv-fd-speaker" open id="findings-explain"><summary>In plain words (for the speaker)'
            f'</summary><ul>{speaker}</ul></details></div>')


def is_drawn(html: str) -> bool:
    """Whether `view_html` drew the view (the findings, or how to produce them) rather than an error
    (which opening the tab again retries)."""
    return 'id="findings-root"' in html or 'id="findings-missing"' in html


def task_choices(folder: Path) -> list[tuple[str, str]]:
    """The selector's (label, task) pairs: the pipeline tasks whose findings are in `folder`."""
    return [(fd.short_name(t), t) for t in fd.available(folder)]


def pick_task(requested: str | None, folder: Path) -> tuple[str, str]:
    """The task to show for a link's `task` (or none) and a note when the link names an unknown one:
    a pipeline task is shown even without findings (the view says how to produce them); anything
    else falls back to the first task with findings."""
    offered = fd.available(folder)
    default = offered[0] if offered else default_task()
    if not requested:
        return default, ""
    known = fd.tasks()
    if requested in known:
        return requested, ""
    return default, error_html(f"This link names task {requested[:30]!r}, which has no pipeline findings; "
                               f"the tasks are {', '.join(known)}. Showing {default}.")


def build(ctx, tab=None) -> dict:
    """The tab's content; the view is drawn when the tab is opened (or a link lands on it). The
    task selector lists the tasks whose findings exist (hidden when there is only one); the task
    is in the tab's link (`?tab=findings&task=virl-l`). Which task the view shows is kept on the
    server (`drawn`, per page), never read back from the page: the drawn view (its charts inline)
    is larger than a request body may be."""
    folder = fd.findings_dir(ctx.settings)
    choices = task_choices(folder)
    first = default_task()
    task = gr.Radio(choices or [(fd.short_name(first), first)],
                    value=choices[0][1] if choices else first, label="Task", elem_id="findings-task",
                    visible=len(choices) > 1, interactive=True)
    view = gr.HTML('<div class="sv-dim">Open this tab to load the findings.</div>', elem_id="findings-view")
    link = gr.JSON({"tab": "findings"}, visible=False)
    drawn = gr.State(None)  # the task whose view is on the page (None: none yet, or an error shown)

    def resolve(chosen: str | None, offered: list[tuple[str, str]]) -> str:
        return chosen or (offered[0][1] if offered else default_task())

    def show(chosen: str | None, note: str = "") -> dict:
        offered = task_choices(folder)  # files copied in after start-up are offered too
        labels = dict((t, label) for label, t in offered)
        chosen = resolve(chosen, offered)
        shown = offered if chosen in labels else offered + [(fd.short_name(chosen), chosen)]
        body = view_html(ctx, chosen)
        return {view: note + body,
                task: gr.Radio(choices=shown or [(fd.short_name(chosen), chosen)], value=chosen,
                               visible=len(shown) > 1),
                link: {"tab": "findings", "task": chosen},
                drawn: chosen if is_drawn(body) else None}

    outputs = [view, task, link, drawn]

    def on_pick(chosen):
        return show(chosen if chosen in fd.tasks() else None)

    def on_load(request: gr.Request):
        params = query_params(request)
        if params.get("tab") != "findings":
            return gr.skip()
        chosen, note = pick_task(params.get("task"), folder)
        return show(chosen, note)

    def on_select(chosen, shown: str | None, request: gr.Request):
        """Opening the tab draws the view unless it already shows the wanted task. The wanted task
        is the link's when the address names this tab (a findings link selects the tab on load
        while `on_load` draws the same task; a click writes the tab's link first), else the
        selector's; so a click, a link and both at once all draw the same task."""
        params = query_params(request)
        wanted, note = (pick_task(params.get("task"), folder) if params.get("tab") == "findings" and params.get("task")
                        else (chosen if chosen in fd.tasks() else None, ""))
        if shown is not None and shown == resolve(wanted, task_choices(folder)):
            return gr.skip()
        return show(wanted, note)

    task.input(on_pick, task, outputs).then(None, link, None, js=URL_UPDATE_JS)
    if tab is not None:
        tab.select(on_select, [task, drawn], outputs).then(None, link, None, js=URL_UPDATE_JS)
    return {"on_load": on_load, "load_outputs": outputs, "link": link}
