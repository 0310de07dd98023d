"""The finding at the top of 24 Points and V-IRL (the landing page): the paper's claim, our own
measured numbers for the task on screen (read from its findings file, `app.findings`), the one
verdict sentence the Findings view also shows (`app.findings.verdict`), and links to the Findings
view and to "Show me the difference". The vision toggle of a tab switches it to the vision task."""
from __future__ import annotations

import gradio as gr

from .. import findings as fd
from ..difference import DifferenceError, default_sides
from .common import esc

CLAIM = ("<b>The paper:</b> post-trained on one rule only, <b>SFT memorizes</b> it and <b>RL generalizes</b> "
         "to a rule neither has seen.")


def _short(task: str, split: str) -> str:
    return fd.split_label(task, split).split(" (")[0]


def banner_html(ctx, task: str) -> str:
    """The claim and, when `task`'s findings ship, its per-split numbers and verdict."""
    folder = fd.findings_dir(ctx.settings)
    try:
        f = fd.load(task, folder)
    except (fd.FindingsError, ValueError):
        f = None
    short = fd.short_name(task)
    if f is None:
        return (f'<div class="sv-finding" data-task="{esc(task)}">{CLAIM} '
                f'<span class="sv-dim">No measured findings ship for {esc(short)} yet.</span></div>')
    try:
        stages = [s.stage for s in default_sides(task)]
    except DifferenceError:
        stages = [s for s in f.stages if s in ("sft", "rl")]
    n = (f.data.get("protocol") or {}).get("episodes_per_split")
    cells = []
    for split in f.splits:
        values = [(fd.STAGE_LABELS.get(s, s), v) for s in stages if (v := f.value(s, split)) is not None]
        if len(values) < len(stages):
            continue
        nums = " · ".join(f'{esc(label)} <b class="sv-finding-num">{100 * v:.1f} %</b>' for label, v in values)
        cells.append(f'<span class="sv-finding-split" data-split="{esc(split)}">{esc(_short(task, split))}: '
                     f'{nums}</span>')
    measured = (f'<b>Our tiny {esc(short)} models</b> ({esc(f.metric_words)}'
                + (f", {n} per split" if n else "") + "): " + " | ".join(cells))
    return (f'<div class="sv-finding" data-task="{esc(task)}"><div>{CLAIM} {measured}</div>'
            f'<div class="sv-finding-verdict">{esc(fd.headline(f))} '
            f'<a href="?tab=findings&amp;task={esc(task)}" target="_self">All the findings →</a></div></div>')


def add(ctx, slot, task: str, switches) -> None:
    """Fill `slot` with the banner for `task`; each (component, task_of) in `switches` redraws it
    for `task_of(value)` when that component changes (a tab's vision toggle)."""
    with slot:
        banner = gr.HTML(banner_html(ctx, task), elem_classes="sv-finding-block")
    for component, task_of in switches:
        component.change(lambda value, task_of=task_of: banner_html(ctx, task_of(value)), component, banner,
                         show_progress="hidden")
