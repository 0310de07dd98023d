"""The Findings view's data: the shipped evaluation of the staged tiny-model pipeline
(`models.train.pipeline.evaluate_stages` → `findings.json`), the paper's reported numbers beside
it, the compute curves, and the import of the evaluated episodes into the store, so that every
number of the view links to its episodes in the Inspect tab.

Every task with staged findings (`tasks()`: the registry's tasks that declare Findings words — the
text pipeline's gp-l and virl-l, `sftvsrl train pipeline`; the vision pipeline's gp-vl and virl-vl,
`sftvsrl train vision`, which writes the same format; any task registered later) goes through the
same code: the numbers are the file's headline `value` (episode success
for GP, per-step accuracy for V-IRL; files written before V-IRL-L carry `success`: `cell_value`)
on every split the file has; GP-VL's cells also carry recognition accuracy (`recognition_rows`,
`paired(..., of="paired_recognition")`). What a task says in words (split labels, the OOD splits
its verdict covers, speaker notes, the command that makes it) is the task's `findings` in the registry
(`game.tasks`, read here by `view_words`); the paper's numbers beside ours are the task's `paper`.

Files, per task, under the findings directory (`Settings.findings_dir`, default
`models/checkpoints/findings`): `<task>/findings.json` (the five-way table, paired comparisons,
snapshot curves) and `<task>/episodes.jsonl.gz` (`models.train.pipeline.write_episodes`: every
final-table episode as stage, split, index, task, params, instance_key, success and one step
record per call). Both are read offline; nothing is fetched.

Import: the episodes are replayed through the task registry's sessions with their recorded
replies (the runner's resume path: `open_session`, `Conversation`), which rebuilds every step
record — with the exact chat sent (`prompt`), which the file leaves out — as a live run stores it;
an episode whose replay disagrees with its record (reward, outcome or success: the engine changed
since the evaluation) is counted in `ImportResult.mismatches` and the view says so. They become
one finished evaluation run, `findings-<task>-<digest>` (digest: the episodes file's SHA-256, so a
new shipped file is a new run and old links stay valid), with one participant per stage and the
stages of one hand in one group (Inspect's "only where the models disagree" pairs them). The run
and all its episodes are written in one transaction (`Store.import_run`), once: a second start, a
second replica, or a second click writes nothing. The first opening of the view starts it in a
background thread (`Importer.start`); a link followed into Inspect waits for it (`Importer.ensure`,
from Gradio's worker thread), so a bar never lands on a half-imported run.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

from game.tasks import DEFAULT_TASK, TASKS, FindingsWords, Instance, InstanceError, StepRecord, get_task, open_session
from game.findings import METRIC_WORDS, STAGE_LABELS as GAME_STAGE_LABELS, View, cell_value, words as generated_words
from models.chat import Conversation

from .charts import colour, style

FINDINGS_FILE = "findings.json"
EPISODES_FILE = "episodes.jsonl.gz"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "models" / "checkpoints" / "findings"
STAGES = ("base", "init", "sft", "rl", "sft-diverse")
STAGE_LABELS = {**GAME_STAGE_LABELS}
RUN_PREFIX = "findings-"
PAPER_LABEL = "reported in the paper, Llama-3.2-11B"
METRICS = ("success_rate", "per_step_accuracy")   # a findings file's `metric` (absent: success_rate)

# Bounds on what is read: the files ship with the app, but a bad copy must fail clearly, not hang.
MAX_FINDINGS_BYTES = 8 * 1024 * 1024
MAX_EPISODES = 50_000
MAX_LINE_CHARS = 256 * 1024
MAX_OUTPUTS = 32
MAX_OUTPUT_CHARS = 32 * 1024


def tasks() -> list[str]:
    """The tasks with staged findings: those of the registry (as it is now) that declare what their
    view says (`Task.findings`), grouped by the trainer that writes their files (`produce`: the text
    pipeline's, then the vision pipeline's; both write the same findings.json / episodes.jsonl.gz)."""
    words = {name: spec.findings for name, spec in TASKS.items() if spec.findings is not None}
    trainers = list(dict.fromkeys(w.produce for w in words.values()))
    return sorted(words, key=lambda name: trainers.index(words[name].produce))


def view_words(task: str) -> FindingsWords | None:
    """What `task`'s view says (its `findings` words in the registry); None for a task without."""
    try:
        return get_task(task).findings
    except InstanceError:
        return None


def short_name(task: str) -> str:
    """The task's name in the view's selector and headings (its `findings.short`, else the task)."""
    words = view_words(task)
    return words.short if words is not None else task


class FindingsError(ValueError):
    """A findings.json or episodes file that cannot be read (message shown as is)."""


def findings_dir(settings=None) -> Path:
    """Where the shipped findings live: `settings.findings_dir`, else the packaged default."""
    configured = getattr(settings, "findings_dir", None)
    return Path(configured) if configured else DEFAULT_DIR


@dataclass
class Findings:
    """One task's shipped findings: the parsed findings.json and where its episodes file is."""

    task: str
    data: dict
    folder: Path
    _digest: str | None = field(default=None, repr=False)

    @property
    def episodes_path(self) -> Path | None:
        path = self.folder / EPISODES_FILE
        return path if path.is_file() else None

    def digest(self) -> str | None:
        """SHA-256 of the episodes file (None without one): names the imported run."""
        if self._digest is None and self.episodes_path is not None:
            h = hashlib.sha256()
            with open(self.episodes_path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._digest = h.hexdigest()
        return self._digest

    @property
    def run_id(self) -> str | None:
        digest = self.digest()
        return f"{RUN_PREFIX}{self.task}-{digest[:12]}" if digest else None

    @property
    def stages(self) -> list[str]:
        table = self.data.get("table") or {}
        return [s for s in STAGES if s in table] + [s for s in table if s not in STAGES]

    @property
    def splits(self) -> list[str]:
        """The file's splits (its protocol's, else its table's), in the registry's order first."""
        return file_splits(self.task, self.data)

    @property
    def metric(self) -> str:
        """The headline the table's `value` holds: `success_rate` (GP-L; files written before
        V-IRL-L have no `metric`) or `per_step_accuracy` (V-IRL-L)."""
        return self.data.get("metric") or "success_rate"

    @property
    def metric_words(self) -> str:
        return METRIC_WORDS.get(self.metric, self.metric)

    @property
    def view(self) -> FindingsWords:
        words = view_words(self.task)
        assert words is not None, f"{self.task} declares no findings words"  # `load` admits only such tasks
        return words

    def value(self, stage: str, split: str) -> float | None:
        """The headline of one table cell (None when the cell is absent)."""
        cell = (self.data["table"].get(stage) or {}).get(split)
        return float(cell_value(cell)) if isinstance(cell, dict) else None


def produce_command(task: str) -> str:
    """The command that writes `task`'s findings.json and episodes file (its trainer, its folder)."""
    words = view_words(task)
    trainer = words.produce if words is not None else "pipeline"
    return f"sftvsrl train {trainer} --task {task} --out runs/{trainer}/{task}"


def split_label(task: str, split: str) -> str:
    words = view_words(task)
    return words.split_labels.get(split, split) if words else split


def file_splits(task: str, data: dict) -> list[str]:
    named = list((data.get("protocol") or {}).get("splits") or {})
    if not named:
        for row in (data.get("table") or {}).values():
            named += [k for k, v in (row.items() if isinstance(row, dict) else ())
                      if isinstance(v, dict) and ("value" in v or "success" in v) and k not in named]
    known = [s for s in get_task(task).split_names if s in named]
    return known + [s for s in named if s not in known]


def available(folder: Path | None = None) -> list[str]:
    """The pipeline tasks whose findings.json is in `folder` (the view's task selector)."""
    base = folder or DEFAULT_DIR
    return [t for t in tasks() if (base / t / FINDINGS_FILE).is_file()]


def load(task: str = DEFAULT_TASK, folder: Path | None = None) -> Findings | None:
    """The task's findings from `folder/<task>/findings.json` (None when the file is absent).
    Raises `FindingsError` for a file that is too large, not JSON, or lacks the table, and a
    ValueError naming the pipeline's tasks for any other task."""
    get_task(task)  # an unknown task is an InstanceError (a ValueError), named
    if task not in tasks():
        raise FindingsError(f"no staged-pipeline findings for {task!r}: the pipeline's tasks are {', '.join(tasks())}")
    base = (folder or DEFAULT_DIR) / task
    path = base / FINDINGS_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_FINDINGS_BYTES:
        raise FindingsError(f"{path}: larger than {MAX_FINDINGS_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FindingsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("table"), dict) or not data["table"]:
        raise FindingsError(f"{path}: no evaluation table (expected evaluate_stages' output)")
    if data.get("task", task) != task:
        raise FindingsError(f"{path}: findings of task {data.get('task')!r}, expected {task!r}")
    metric = data.get("metric") or "success_rate"
    if metric not in METRICS:
        raise FindingsError(f"{path}: unknown metric {str(metric)[:40]!r} (expected {' or '.join(METRICS)})")
    what = {"success_rate": "success rate", "per_step_accuracy": "per-step accuracy"}[metric]
    protocol = data.get("protocol", {})
    if not isinstance(protocol, dict) or not isinstance(protocol.get("splits", {}), dict):
        raise FindingsError(f"{path}: protocol.splits is not a mapping of split names")
    for stage, row in data["table"].items():
        if not isinstance(row, dict):
            raise FindingsError(f"{path}: table[{stage!r}] is not a row of splits")
        for split in file_splits(task, data):
            cell = row.get(split)
            if cell is not None and not (isinstance(cell, dict) and _number(cell.get("value", cell.get("success")))):
                raise FindingsError(f"{path}: table[{stage!r}][{split!r}] has no {what}")
    return Findings(task, data, base)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def inspect_link(run_id: str, stage: str, split: str) -> str:
    """The Inspect tab's deep link to one stage's episodes on one split."""
    return "?" + urlencode({"tab": "inspect", "run": run_id, "model": stage, "split": split})


# ---------------------------------------------------------------------------------- the view
@dataclass
class Bar:
    stage: str
    split: str
    value: float            # the task's headline (0..1): episode success or per-step accuracy
    se: float | None
    n: int | None           # episodes
    link: str | None        # Inspect deep link (None when no episodes file ships)


def bars(f: Findings) -> list[Bar]:
    """One bar per (stage, split) of the five-way table, in stage order, every split of the file."""
    out = []
    for stage in f.stages:
        row = f.data["table"][stage]
        for split in f.splits:
            cell = row.get(split)
            if not cell:
                continue
            se = cell.get("se")
            out.append(Bar(stage, split, float(cell_value(cell)), float(se) if _number(se) else None,
                           cell.get("n"), inspect_link(f.run_id, stage, split) if f.run_id else None))
    return out


def paper_entry(task: str, split: str | None = None) -> dict | None:
    """The paper's reported numbers for `task` on `split` (default: its first reported split)."""
    entries = get_task(task).paper
    return next((e for e in entries if split is None or e["split"] == split), None)


def paper_bars(task: str, split: str | None = None) -> list[tuple[str, float]]:
    """The paper's reported (stage, value) on `split` (default its headline split), Init / SFT / RL."""
    paper = paper_entry(task, split)
    return list(paper["values"].items()) if paper else []


def recognition_rows(f: Findings) -> dict[str, dict[str, tuple[float, float | None]]]:
    """GP-VL's recognition accuracy (paper §5.3) per stage and split as (value, SE); {} when the
    file has none."""
    out: dict[str, dict[str, tuple[float, float | None]]] = {}
    for stage in f.stages:
        row = f.data["table"][stage]
        cells = {split: (float(row[split]["recognition"]),
                         float(row[split]["recognition_se"]) if _number(row[split].get("recognition_se")) else None)
                 for split in f.splits if isinstance(row.get(split), dict) and _number(row[split].get("recognition"))}
        if cells:
            out[stage] = cells
    return out


def paired(f: Findings, name: str, split: str, of: str = "paired") -> dict | None:
    """A paired comparison from findings.json (`rl_minus_sft`, `rl_minus_init`, `sft_minus_init`,
    `sft_diverse_minus_sft`) of the headline (`of="paired"`) or of recognition
    (`of="paired_recognition"`, GP-VL), or None."""
    cell = ((f.data.get(of) or {}).get(name) or {}).get(split)
    return cell if isinstance(cell, dict) and _number(cell.get("diff")) else None


def ood_splits(f: Findings) -> list[tuple[str, str]]:
    """The OOD splits a verdict speaks of, with their words: rule-OOD, then the task's others."""
    return [(s, w) for s, w in (("rule-ood", f.view.ood), *f.view.more_ood.items()) if s in f.splits]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} points"


def lens_words(f: Findings) -> dict | None:
    """The words of a file with lenses (format 2: final checkpoints, matched compute, matched
    in-distribution skill, matched KL, over training seeds): `game.findings.words` with this task's
    view; None for an older file (final checkpoints only)."""
    if not f.data.get("lenses"):
        return None
    view = View(ood=dict(ood_splits(f)), instances=f.view.instances,
                labels={s: split_label(f.task, s) for s in f.splits}, control=f.view.control)
    return generated_words(f.data, view)


def headline(f: Findings) -> str:
    """One line for a banner: the lens verdict in short, or (an older file) the final-checkpoint verdict."""
    w = lens_words(f)
    return w["short"] if w else verdict(f)


def verdict(f: Findings) -> str:
    """What the comparison says. A file with lenses: its headline and one sentence per OOD split
    covering every lens (`lens_words`). An older file: the RL-vs-SFT paired comparison of the final
    checkpoints on each OOD split (`ood_splits`: rule-OOD, and GP-VL's red suits), which says that
    it is the final checkpoints only: that contrast alone is not the paper's finding."""
    w = lens_words(f)
    if w:
        return " ".join([w["headline"], *w["verdicts"]])
    out = []
    for split, words in ood_splits(f):
        p = paired(f, "rl_minus_sft", split)
        if p is None:
            continue
        if not p.get("se") and not p["diff"]:
            both = f.value("rl", split)
            out.append(f"On {words} RL and SFT score the same on every {f.view.instances[:-1]}"
                       + (f" ({_pct(both)})" if both is not None else "")
                       + ": nothing to tell them apart." + (" Neither gets any of it right." if both == 0 else ""))
            continue
        z = p["diff"] / p["se"] if p.get("se") else 0.0
        head = (f"RL − SFT on {words}: {_pts(p['diff'])} ± {100 * p['se']:.1f} "
                f"(paired, z = {z:.1f}, n = {p['n']}{'' if f.metric == 'success_rate' else ' episodes'})")
        if z >= 2:
            out.append(head + ": RL is ahead at the final checkpoints (not checked at matched skill, compute or "
                       "KL, one training seed).")
        elif z <= -2:
            out.append(head + ": SFT is ahead here — the opposite of the paper's finding.")
        else:
            out.append(head + ": within two standard errors — this evaluation cannot tell them apart.")
    return " ".join(out) or "There is no paired RL-vs-SFT comparison in this evaluation."


def forgetting(rl: dict, sft: dict) -> str:
    """Who lost how much of Init's OOD reach, in words that follow the numbers (a drop counts
    when it is at least 2 SE)."""
    rl_lost, sft_lost = rl["diff"] / rl["se"] <= -2, sft["diff"] / sft["se"] <= -2
    if rl_lost and sft_lost:
        return ("Both forget; RL forgets less, not nothing." if rl["diff"] > sft["diff"]
                else "Both forget, and RL forgets more.")
    if rl_lost:
        return "RL forgets and SFT does not: the opposite of the paper."
    if sft_lost:
        return "SFT forgets and RL does not, as in the paper."
    return "Neither loses it significantly."


def explanation(f: Findings) -> list[str]:
    """A few plain sentences a speaker can read out, with this evaluation's numbers (the task's
    words from `view_words`, the same sentences for every task)."""
    view = f.view

    def val(stage: str, split: str) -> str | None:
        v = f.value(stage, split)
        return None if v is None else _pct(v)

    lines = [view.intro]
    if val("base", "rule-ood") and view.base_line:
        lines.append(view.base_line.format(id=val("base", "id"), ood=val("base", "rule-ood")))
    parts = [f"{STAGE_LABELS[s]} {val(s, 'id')} / {val(s, 'rule-ood')}" for s in ("init", "sft", "rl", "sft-diverse")
             if val(s, "id") and val(s, "rule-ood")]
    if parts:
        lines.append(view.split_line + "; ".join(parts) + ".")
    for split in (sp for sp in f.splits if sp not in ("id", "rule-ood")):   # V-IRL-L's held-out streets
        cells = [f"{STAGE_LABELS.get(s, s)} {val(s, split)}" for s in f.stages if val(s, split)]
        if cells:
            lines.append(f"On {split_label(f.task, split)}: " + "; ".join(cells) + ".")
    lines.append(verdict(f))
    lines += (lens_words(f) or {}).get("notes", [])
    learned = paired(f, "rl_minus_init", "id")
    if learned is not None and learned.get("se"):
        z = learned["diff"] / learned["se"]
        lines.append(f"Did RL learn at all? RL − Init in distribution: {_pts(learned['diff'])} "
                     f"± {100 * learned['se']:.1f} (z = {z:.1f})"
                     + (" — it did." if z >= 2 else " — not significantly: any OOD advantage may come from "
                                                     "moving the model less, not from learning."))
    for split, words in ood_splits(f):
        rl_ood, sft_ood = paired(f, "rl_minus_init", split), paired(f, "sft_minus_init", split)
        if rl_ood is not None and sft_ood is not None and rl_ood.get("se") and sft_ood.get("se"):
            lines.append(f"Against Init on {words}: RL {_pts(rl_ood['diff'])} ± {100 * rl_ood['se']:.1f}, "
                         f"SFT {_pts(sft_ood['diff'])} ± {100 * sft_ood['se']:.1f}. " + forgetting(rl_ood, sft_ood))
    recog = recognition_rows(f)
    if recog:
        parts = [f"{STAGE_LABELS.get(s, s)} " + " / ".join(_pct(cells[sp][0]) for sp in f.splits if sp in cells)
                 for s, cells in recog.items()]
        line = ("Seeing the cards (recognition: the share of replies that name the four cards right, paper §5.3; "
                + " / ".join(split_label(f.task, sp).split(" (")[0] for sp in f.splits) + "): " + "; ".join(parts) + ".")
        for split, words in ood_splits(f):
            p = paired(f, "rl_minus_sft", split, of="paired_recognition")
            if p is not None and p.get("se"):
                z = p["diff"] / p["se"]
                line += (f" RL − SFT on {words}: {_pts(p['diff'])} ± {100 * p['se']:.1f} (z = {z:.1f}).")
        lines.append(line + " The paper found that RL improves recognition and SFT erodes it.")
    div = paired(f, "sft_diverse_minus_sft", "rule-ood")
    if div is not None and view.diverse_line:
        lines.append(view.diverse_line.format(diff=_pts(div["diff"]), se=f"{100 * div['se']:.1f}"))
    for paper in get_task(f.task).paper:
        v = paper["values"]
        lines.append(f"For scale, {PAPER_LABEL}, {paper['metric']} on {split_label(f.task, paper['split'])}: "
                     f"Init {_pct(v['init'])}, SFT {_pct(v['sft'])}, RL {_pct(v['rl'])}.")
    if get_task(f.task).paper_words:
        lines.append(get_task(f.task).paper_words)
    return lines


CURVE_STAGES = ("sft", "rl", "sft-diverse")   # post-training from Init: one compute axis (the paper's Fig. 5)


def curves_points(f: Findings, stages: tuple[str, ...] = CURVE_STAGES) -> dict[str, list[dict]]:
    """Per stage of `stages` with a curve, its snapshot points with `flops`: training compute
    2·N·(3·train tokens + inference tokens) as recorded, else with N recovered from the stage's
    final compute record (None when neither is there: the points then carry tokens only)."""
    out: dict[str, list[dict]] = {}
    curves = f.data.get("curves") or {}
    if f.data.get("format", 1) >= 2:   # per training seed: the primary seed's curves (the shipped run)
        curves = curves.get(str(f.data.get("primary_seed", 0))) or {}
    for stage in stages:
        pts = curves.get(stage) or []
        comp = (f.data["table"].get(stage) or {}).get("compute") or {}
        denom = 2 * (3 * (comp.get("train_tokens") or 0) + (comp.get("infer_tokens") or 0))
        params = comp["flops"] / denom if _number(comp.get("flops")) and denom else None
        rows = []
        for p in pts:
            if not isinstance(p, dict):
                continue
            tokens = 3 * (p.get("train_tokens") or 0) + (p.get("infer_tokens") or 0)
            flops = p["flops"] if _number(p.get("flops")) else (2 * params * tokens if params else None)
            rows.append({**p, "flops": flops, "work": tokens})
        if rows:
            out[stage] = rows
    return out


def curves_plot(f: Findings, path: Path, look: str = "light") -> Path | None:
    """Every split's headline against training compute along SFT, RL and SFT-diverse (the shape
    of the paper's Figure 5), one panel per split, plus the base's own training curve (every split
    in one panel: it starts from random weights, so it has its own compute axis) when findings.json
    has one; a PNG at `path` in `look` (`app.charts`: the page's, or presenter mode's dark, large
    type), None when findings.json has no curves."""
    pts = curves_points(f)
    base = curves_points(f, ("base",)).get("base")
    if not pts and not base:
        return None

    with style(look) as plt:
        splits = f.splits
        panels = (len(splits) if pts else 0) + (1 if base else 0)
        big = look == "presenter"
        fig, axes = plt.subplots(1, panels, figsize=((5.2 if big else 3.4) * panels + 1.2, 5.4 if big else 3.6),
                                 dpi=110, squeeze=False)
        axes = list(axes[0])

        def xlabel(ax, rows_by_stage) -> bool:
            use_flops = all(p["flops"] is not None for rows in rows_by_stage for p in rows)
            ax.set_xlabel("training compute (FLOPs)" if use_flops else "training compute (token passes)")
            return use_flops

        unit = f"{f.metric_words} (%)"
        if pts:
            for ax, split in zip(axes, splits):
                use_flops = xlabel(ax, pts.values())
                for stage, rows in pts.items():
                    xs = [p["flops"] if use_flops else p["work"] for p in rows]
                    ys = [100 * p[split] for p in rows if _number(p.get(split))]
                    if len(ys) != len(xs):
                        continue
                    ax.plot(xs, ys, marker="o", label=STAGE_LABELS[stage], color=colour(stage, look),
                            linestyle="--" if stage == "sft-diverse" else "-")
                ax.set_title(split_label(f.task, split))
                ax.set_ylim(-2, 102)
                ax.grid(alpha=0.3)
            axes[0].set_ylabel(unit)
            axes[0].legend(frameon=False)
        if base:
            ax = axes[-1]
            use_flops = xlabel(ax, [base])
            xs = [p["flops"] if use_flops else p["work"] for p in base]
            for i, split in enumerate(splits):
                ys = [100 * p[split] for p in base if _number(p.get(split))]
                if len(ys) == len(xs):
                    ax.plot(xs, ys, marker="o", label=split_label(f.task, split), color=colour(i, look))
            ax.set_title("Base, from random weights")
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
            ax.legend(frameon=False)
            if not pts:
                ax.set_ylabel(unit)
        n = f.data.get("protocol", {}).get("curve_episodes")
        fig.suptitle(f"{short_name(f.task)}: {f.metric_words} along training"
                     + (f" ({n} episodes per point)" if n else ""))
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- the import
def read_episodes(path: Path) -> Iterator[dict]:
    """The episodes file's records, validated and bounded (a bad line raises `FindingsError`), each
    with `instance` ({task, params}) and `outputs` (every call's reply) added."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if number > MAX_EPISODES:
                    raise FindingsError(f"{path}: more than {MAX_EPISODES} episodes")
                if len(line) > MAX_LINE_CHARS:
                    raise FindingsError(f"{path}: line {number} longer than {MAX_LINE_CHARS} characters")
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FindingsError(f"{path}: line {number} is not JSON ({exc})") from None
                steps = rec.get("steps") if isinstance(rec, dict) else None
                if not (isinstance(rec, dict) and isinstance(rec.get("stage"), str) and isinstance(rec.get("split"), str)
                        and isinstance(rec.get("index"), int) and isinstance(rec.get("task"), str)
                        and isinstance(rec.get("params"), dict) and isinstance(steps, list) and len(steps) <= MAX_OUTPUTS
                        and all(isinstance(s, dict) and isinstance(s.get("output"), str)
                                and len(s["output"]) <= MAX_OUTPUT_CHARS for s in steps)):
                    raise FindingsError(f"{path}: line {number} is not an episode record "
                                        "(stage, split, index, task, params, steps with their output)")
                rec["instance"] = {"task": rec["task"], "params": rec["params"]}
                rec["outputs"] = [s["output"] for s in steps]
                yield rec
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FindingsError(f"{path}: cannot read ({exc})") from None


def replay(instance: Instance, outputs: list[str]) -> tuple[list[dict], bool, bool | None]:
    """Play `instance` with the stored replies through the registry session and the reference's
    chat flow (as the runner resumes an episode): every step record with its prompt, the success
    and the exact success. Raises `FindingsError` when the replies do not make one whole episode."""
    session = open_session(instance)
    conv = Conversation(image=session.vision)
    steps = []
    for text in outputs:
        if session.done:
            raise FindingsError(f"{instance.key}: more replies than the episode takes")
        messages = conv.messages_for(session.prompt())
        result = session.step(text)
        conv.record(text, result.feedback)
        steps.append(StepRecord.of(result, text, prompt=messages).to_dict())
    if not session.done:
        raise FindingsError(f"{instance.key}: the stored replies end before the episode does")
    return steps, bool(session.success), session.exact_success


def episode_id(run_id: str, stage: str, split: str, index: int) -> str:
    """The stored id of an imported episode: deterministic (a re-import finds the same ids) and
    distinct in its first characters, as Inspect shows them (24 hex digits of a SHA-256)."""
    return hashlib.sha256(f"{run_id}/{stage}/{split}/{index}".encode()).hexdigest()[:24]


@dataclass
class ImportResult:
    run_id: str
    episodes: int
    written: bool            # False: the run was already stored (nothing written)
    mismatches: int = 0      # episodes whose replayed success differs from the recorded one


def import_episodes(store, f: Findings) -> ImportResult:
    """Replay the episodes file into the store as run `f.run_id` (see the module doc); idempotent.
    Nothing is written unless every line reads and replays."""
    run_id, path = f.run_id, f.episodes_path
    if run_id is None or path is None:
        raise FindingsError(f"no {EPISODES_FILE} next to {f.folder / FINDINGS_FILE}: the Findings numbers "
                            f"cannot link to episodes (re-run `{produce_command(f.task)}`)")
    if store.get_run(run_id) is not None:
        return ImportResult(run_id, 0, False)
    episodes: list[dict] = []
    stages: list[str] = []
    splits: list[str] = []
    mismatches = 0
    counts: dict[tuple[str, str], int] = {}
    for rec in read_episodes(path):
        try:
            instance = Instance.from_dict(rec["instance"])
        except (InstanceError, TypeError) as exc:
            raise FindingsError(f"{f.episodes_path}: episode {rec['stage']}/{rec['split']}/{rec['index']}: {exc}") from None
        if instance.task != f.task:
            raise FindingsError(f"{f.episodes_path}: an episode of task {instance.task!r} in {f.task!r} findings")
        try:
            steps, success, exact = replay(instance, rec["outputs"])
        except InstanceError as exc:
            raise FindingsError(f"{f.episodes_path}: episode {rec['stage']}/{rec['split']}/{rec['index']}: {exc}") from None
        recorded = [(s.get("reward"), s.get("outcome")) for s in rec["steps"]]
        if bool(rec.get("success")) != success or recorded != [(s["reward"], s["outcome"]) for s in steps]:
            mismatches += 1
        stage, split, index = rec["stage"][:64], rec["split"][:64], rec["index"]
        for name, seen in ((stage, stages), (split, splits)):
            if name not in seen:
                seen.append(name)
        counts[(stage, split)] = counts.get((stage, split), 0) + 1
        episodes.append({
            "id": episode_id(run_id, stage, split, index), "group_id": f"{run_id}:{split}:{index}", "task": f.task,
            "instance": instance.to_dict(), "instance_key": instance.key, "participant": stage,
            "participant_kind": "model", "success": success, "exact_success": exact, "eval_split": split,
            "eval_index": index, "steps": steps,
            "settings": {"eval_run_id": run_id, "imported": "findings", "checkpoint": f"{f.task}-{stage}"}})
    n = max(counts.values(), default=0)
    config = {"task": f.task, "models": stages, "splits": splits, "episodes": n, "imported": True,
              "source": f"{f.task}/{EPISODES_FILE}", "sha256": f.digest()}
    summary = {"imported": True, "episodes": len(episodes), "replay_mismatches": mismatches}
    written = store.import_run({"id": run_id, "task": f.task, "config": config, "config_key": f"findings:{f.digest()}",
                                "summary": summary}, episodes)
    return ImportResult(run_id, len(episodes), written, mismatches)


class Importer:
    """Imports each task's findings episodes into one store at most once per process (thread-safe;
    the store's transaction makes it once across processes too). `start` runs it in a background
    thread (the view does not wait: 5,000 episodes take seconds); `ensure` runs it or waits for the
    running one (Inspect, before listing a findings run). Never call either on the event loop."""

    def __init__(self, store, folder: Path | None = None) -> None:
        self.store, self.folder = store, folder
        self._lock = threading.Lock()         # one import at a time; `ensure` waits for a running one
        self._state = threading.Lock()        # guards _running
        self._done: dict[str, ImportResult] = {}
        self._running: set[str] = set()
        self._failed: dict[str, str] = {}

    def start(self, task: str = DEFAULT_TASK) -> bool:
        """Run `ensure(task)` in a background thread unless it is done or running; returns whether
        the import is still to finish (the view says so; a link's `ensure` waits for it)."""
        with self._state:
            if task in self._done:
                return False
            if task in self._running:
                return True
            self._running.add(task)

        def run() -> None:
            try:
                self.ensure(task)
            except Exception as exc:  # noqa: BLE001 - kept for the view to show
                self._failed[task] = str(exc)
            finally:
                with self._state:
                    self._running.discard(task)

        threading.Thread(target=run, name=f"findings-import-{task}", daemon=True).start()
        return True

    def done(self, task: str = DEFAULT_TASK) -> ImportResult | None:
        """The finished import of `task` in this process, if any."""
        return self._done.get(task)

    def failure(self, task: str = DEFAULT_TASK) -> str | None:
        """Why the last background import of `task` failed (None if it did not)."""
        return self._failed.get(task)

    def ensure(self, task: str = DEFAULT_TASK) -> ImportResult | None:
        """The import of `task`'s findings (None when no findings.json ships). Raises `FindingsError`."""
        with self._lock:
            f = load(task, self.folder)
            if f is None or f.run_id is None:
                return None
            done = self._done.get(task)
            if done is not None and done.run_id == f.run_id:
                return done
            result = import_episodes(self.store, f)
            self._done[task] = result
            self._failed.pop(task, None)
            return result


_CREATE = threading.Lock()


def importer_for(ctx) -> Importer:
    """The app's importer (one per app context, created on first use)."""
    with _CREATE:
        imp = getattr(ctx, "findings_importer", None)
        if imp is None:
            imp = ctx.findings_importer = Importer(ctx.store, findings_dir(ctx.settings))
        return imp


def ensure_for_run(ctx, run_id: str | None) -> None:
    """Before Inspect lists run `run_id`: import the findings it names, if that is one (a deep link
    followed before the Findings view was opened). Errors are left to the Findings view to show."""
    if not run_id or not run_id.startswith(RUN_PREFIX):
        return
    task = next((t for t in sorted(TASKS, key=len, reverse=True) if run_id.startswith(f"{RUN_PREFIX}{t}-")), None)
    if task is None:
        return
    try:
        importer_for(ctx).ensure(task)
    except (FindingsError, ValueError):
        pass

