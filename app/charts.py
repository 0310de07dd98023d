"""How the app's charts look (the Findings curves, the Evaluate bars): the page's light style and
presenter mode's, drawn for a black background with large type and bright lines (a projector).

A chart is drawn once per look (`LOOKS`) by the same drawing code inside `style(look)`, a matplotlib
rc context; `colour(name, look)` gives a series its colour in that look. The page shows the light
image, or the presenter image while presenter mode is on (`pair_html`, CSS classes
`sv-light-only` / `sv-presenter-only` in static/ui.css), so switching modes needs no server call.
"""
from __future__ import annotations

import base64
import html
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

LOOKS = ("light", "presenter")
_BASE = {"font.family": "DejaVu Sans", "axes.spines.top": False, "axes.spines.right": False}
_RC: dict[str, Any] = {
    "light": {**_BASE, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
              "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.facecolor": "white", "savefig.facecolor": "white"},
    "presenter": {**_BASE, "font.size": 17, "axes.titlesize": 19, "axes.labelsize": 17, "legend.fontsize": 16,
                  "xtick.labelsize": 15, "ytick.labelsize": 15, "figure.titlesize": 19,
                  "figure.facecolor": "black", "savefig.facecolor": "black", "axes.facecolor": "black",
                  "text.color": "white", "axes.labelcolor": "white", "axes.titlecolor": "white",
                  "xtick.color": "white", "ytick.color": "white", "axes.edgecolor": "#d4d4d4",
                  "grid.color": "#8a8a8a", "lines.linewidth": 3.2, "lines.markersize": 9,
                  "errorbar.capsize": 5, "legend.labelcolor": "white"},
}
# Series colours per look: the light ones read on white, the presenter ones on black (≥ 4.5:1).
_COLOURS = {
    "sft": ("#c44e52", "#ff8a8a"), "rl": ("#4c72b0", "#8cc0ff"), "sft-diverse": ("#8c8c8c", "#e0e0e0"),
    "init": ("#55a868", "#8ee6a0"), "base": ("#a1a1aa", "#d4d4d8"),
}
_CYCLE = (("#4c72b0", "#8cc0ff"), ("#dd8452", "#ffb27a"), ("#55a868", "#8ee6a0"), ("#c44e52", "#ff8a8a"),
          ("#8172b2", "#c7b8ff"), ("#937860", "#e0c2a0"))


@contextmanager
def style(look: str):
    """matplotlib's rc settings for `look` (Agg backend) while drawing one chart."""
    # lazy: matplotlib is heavy (~1 s) and optional (the `web` extra): only drawing a chart loads it,
    # and the Agg backend must be chosen before pyplot is imported
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(_RC[look]):
        yield plt


def colour(name: str | int, look: str) -> str:
    """The colour of a named series (a stage) or of the i-th series of a chart in `look`."""
    i = LOOKS.index(look)
    if isinstance(name, int):
        return _CYCLE[name % len(_CYCLE)][i]
    return _COLOURS.get(name, _CYCLE[sum(map(ord, name)) % len(_CYCLE)])[i]


def pair_html(draw: Callable[[Path, str], Path | None], alt: str, cls: str = "") -> str:
    """Both looks of one chart as inline images (`draw(path, look)` writes a PNG and returns it, or
    None for no chart); '' when there is nothing to draw."""
    imgs = []
    with tempfile.TemporaryDirectory() as tmp:
        for look in LOOKS:
            png = draw(Path(tmp) / f"{look}.png", look)
            if png is None:
                return ""
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            only = "sv-presenter-only" if look == "presenter" else "sv-light-only"
            imgs.append(f'<img class="{only} {html.escape(cls)}" data-look="{look}" alt="{html.escape(alt)}" '
                        f'src="data:image/png;base64,{data}">')
    return "".join(imgs)
