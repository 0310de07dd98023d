"""The Findings tab: the paper's finding in one screen, from the shipped pipeline evaluation
(`app.findings`: findings.json, offline). The five-way table, ID / rule-OOD bars with ± SE for
Base, Init, SFT, RL and SFT-diverse, the paper's reported numbers beside ours, the paired RL − SFT
difference, the compute curves and a plain-language explanation a speaker can read out. Every bar
and table cell links to its episodes in the Inspect tab; opening the tab starts importing them
into the store once, in a background thread (`app.findings.Importer`), never on the event loop."""
from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import gradio as gr

from .. import findings as fd
from .common import error_html, esc

TASK = "gp-l"


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


def _table_html(f: fd.Findings) -> str:
    head = "".join(f"<th>{esc(fd.SPLIT_LABELS.get(s, s))}</th>" for s in f.splits)
    rows = []
    for stage in f.stages:
        row = f.data["table"][stage]
        cells = []
        for split in f.splits:
            cell = row.get(split)
            if not cell:
                cells.append("<td>—</td>")
                continue
            text = f"{_pct(cell['success'])} ± {_pct(cell.get('se') or 0)} %"
            link = fd.inspect_link(f.run_id, stage, split) if f.run_id else None
            cells.append(f'<td><a href="{esc(link)}" target="_self">{esc(text)}</a></td>' if link
                         else f"<td>{esc(text)}</td>")
        kl = row.get("kl_from_init")
        flops = (row.get("compute") or {}).get("flops")
        rows.append(f'<tr data-stage="{esc(stage)}"><th title="{esc(fd.STAGE_NOTES.get(stage, ""))}">'
                    f'{esc(fd.STAGE_LABELS.get(stage, stage))}</th>{"".join(cells)}'
                    f'<td>{"—" if kl is None else f"{kl:.2f}"}</td>'
                    f'<td>{"—" if not flops else f"{flops:.2e}"}</td></tr>')
    n = f.data.get("protocol", {}).get("episodes_per_split")
    return (f'<table class="sv-fd-table" id="findings-table"><thead><tr><th>stage</th>{head}'
            f'<th>KL(Init ‖ model), nats</th><th>training FLOPs</th></tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table><div class="sv-dim">Episode success, ± binomial standard error'
            f'{f", {n} episodes per split" if n else ""}; the hands are the protocol\'s seeded lists, the '
            f'same for every stage. Each number opens its episodes in Inspect.</div>')


def _bars_html(f: fd.Findings) -> str:
    groups = []
    all_bars = fd.bars(f)
    for split in f.splits:
        items = [_bar_html(fd.STAGE_LABELS.get(b.stage, b.stage), b.value, b.se, b.link, b.stage,
                           f"{fd.STAGE_LABELS.get(b.stage, b.stage)} on {split}: open its {b.n} episodes in Inspect",
                           f"bar-{b.stage}-{b.split}")
                 for b in all_bars if b.split == split]
        paper = fd.PAPER.get(f.task)
        if paper and paper["split"] == split:
            items.append(f'<div class="sv-fd-paper-head">{esc(fd.PAPER_LABEL)} ({esc(paper["source"])})</div>')
            items += [_bar_html(f"{fd.STAGE_LABELS[s]} (paper)", v, None, None, "paper",
                                f"{fd.PAPER_LABEL}: {fd.STAGE_LABELS[s]} {_pct(v)} %", f"paper-{s}")
                      for s, v in fd.paper_bars(f.task)]
        groups.append(f'<div class="sv-fd-group"><h3>{esc(fd.SPLIT_LABELS.get(split, split))}</h3>'
                      f'{"".join(items)}</div>')
    return f'<div class="sv-fd-bars" id="findings-bars">{"".join(groups)}</div>'


def _paired_html(f: fd.Findings) -> str:
    items = []
    for name, label in (("rl_minus_sft", "RL − SFT"), ("rl_minus_init", "RL − Init"), ("sft_minus_init", "SFT − Init"),
                        ("sft_diverse_minus_sft", "SFT-diverse − SFT")):
        for split in f.splits:
            p = fd.paired(f, name, split)
            if p is None:
                continue
            z = p["diff"] / p["se"] if p.get("se") else 0.0
            strong = abs(z) >= 2
            items.append(f'<li data-testid="paired-{esc(name)}-{esc(split)}"><b>{esc(label)}</b>, {esc(split)}: '
                         f'{100 * p["diff"]:+.1f} ± {100 * p["se"]:.1f} points (z = {z:.1f}, n = {p["n"]})'
                         f'{" — beyond 2 SE" if strong else " — within 2 SE"}</li>')
    if not items:
        return ""
    return ('<div class="sv-fd-paired" id="findings-paired"><h3>Paired differences (same hands)</h3><ul>'
            + "".join(items) + "</ul></div>")


def _curves_html(f: fd.Findings) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        png = fd.curves_plot(f, Path(tmp) / "curves.png")
        if png is None:
            return '<div class="sv-dim">No snapshot curves in this evaluation.</div>'
        data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f'<figure class="sv-fd-curves" id="findings-curves"><img alt="ID and rule-OOD success against '
            f'training compute along SFT, RL and SFT-diverse" src="data:image/png;base64,{data}">'
            f'<figcaption class="sv-dim">Success along training from Init against training compute (the shape '
            f'of the paper\'s Figure 5). Snapshots are scored on fewer episodes than the table.</figcaption></figure>')


def missing_html(task: str, folder: Path) -> str:
    cmd = fd.PRODUCE_COMMAND.format(task=task)
    return (f'<div class="sv-info" id="findings-missing"><b>No findings for {esc(task)} yet.</b> This view reads '
            f'<code>{esc(folder / task / fd.FINDINGS_FILE)}</code>, written by the staged training pipeline:'
            f'<pre>{esc(cmd)} --out runs/pipeline/{esc(task)}</pre>then copy <code>findings.json</code> and '
            f'<code>{fd.EPISODES_FILE}</code> from its output folder to <code>{esc(folder / task)}/</code> '
            f'(or point <code>SFTVSRL_FINDINGS_DIR</code> at a folder holding <code>{esc(task)}/findings.json</code>).'
            f'</div>')


def view_html(ctx, task: str = TASK) -> str:
    """The whole view for `task`; starts the import of its episodes (call from a worker thread)."""
    folder = fd.findings_dir(ctx.settings)
    try:
        f = fd.load(task, folder)
    except fd.FindingsError as exc:
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
    return (f'<div class="sv-fd" id="findings-root" data-run="{esc(f.run_id or "")}">'
            f'<h2>{esc(task)}: does SFT memorize and RL generalize? Our tiny models, and the paper</h2>'
            f'<div class="sv-verdict" id="findings-verdict">{esc(fd.verdict(f))}</div>{note}'
            f'<div class="sv-fd-row">{_bars_html(f)}<div class="sv-fd-side">{_table_html(f)}{_paired_html(f)}'
            f'</div></div>{_curves_html(f)}'
            f'<details class="sv-fd-speaker" open id="findings-explain"><summary>In plain words (for the speaker)'
            f'</summary><ul>{speaker}</ul></details></div>')


def build(ctx, tab=None) -> dict:
    """The tab's content; the view is drawn when the tab is opened (or a link lands on it)."""
    view = gr.HTML('<div class="sv-dim">Open this tab to load the findings.</div>', elem_id="findings-view")
    link = gr.JSON({"tab": "findings"}, visible=False)

    def show():
        return {view: view_html(ctx)}

    def on_load(request: gr.Request):
        from .common import query_params

        if query_params(request).get("tab") != "findings":
            return gr.skip()
        return show()

    if tab is not None:
        tab.select(show, None, [view])
    return {"on_load": on_load, "load_outputs": [view], "link": link}
