"""Batch evaluation: the paper's protocols, run for several models on the same instances (paired),
resumable, with the paper's metrics, a Markdown table, a PNG plot and reference-style JSONL.

Protocols (spec generalpoints.md §3.3, §4; virl.md §1.5, §1.7, §3):
- `gp-l`:  id (`language_id`), rule-ood (`language_rule_ood`); 234 episodes from seed 42, 5 tries.
- `gp-vl`: id (`vl_id_black`), rule-ood (`vl_rule_ood_black`), visual-ood (`vl_visual_ood_red`);
           plus recognition accuracy = 1 − (#steps with −1.5)/(#steps); with `recognition=True`
           the recognition protocol (§3.3): one attempt per episode, verification off.
- `virl-l`:  id (absolute actions), rule-ood (relative actions); 48 episodes, seed 12, 2 tries.
- `virl-vl`: the same plus visual-ood: 18 routes in order from the release's VLN_mini when given
             (`sources["visual-ood"]`), else our bundled held-out routes (`bundled:helsinki-ood`).
Instances: GP hands are `game.gp.deal.evaluation_hands` (the reference's stream from seed 42,
constructor hand skipped). V-IRL episode i uses `start_episode(seed=12000 + i)` (native RNG: route,
heading and drops drawn per episode) — the reference draws all 48 from one global stream, which
depends on its process state; visual OOD takes routes 0..17 in order (`order=True`).
Metrics: GP episode success = episodes with a +5 step / episodes (plus our exact-arithmetic
success and per-step outcome rates); V-IRL per-step accuracy = calls with +1 / all calls (pooled)
and episode success. Error bars are binomial, sqrt(p(1−p)/N).

Resume: a run is keyed by its configuration; every (split, index, model) item is one stored
episode. On resume, finished items are skipped and interrupted or failed ones continue from their
last committed step (the stored replies are fed back to the engine, no model call repeated).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable

from .runner import play
from .store import Store
from .tasks import Instance


@dataclass(frozen=True)
class Split:
    name: str
    default_n: int
    gp_config: str | None = None          # GP: key of game.gp.deal.EVAL_CONFIGS
    absolute_action: bool = True          # V-IRL
    ordered: bool = False                 # V-IRL visual OOD: route i for episode i
    source_key: str = "id"                # V-IRL: which source the split reads


PROTOCOLS: dict[str, tuple[Split, ...]] = {
    "gp-l": (Split("id", 234, "language_id"), Split("rule-ood", 234, "language_rule_ood")),
    "gp-vl": (Split("id", 234, "vl_id_black"), Split("rule-ood", 234, "vl_rule_ood_black"),
              Split("visual-ood", 234, "vl_visual_ood_red")),
    "virl-l": (Split("id", 48), Split("rule-ood", 48, absolute_action=False)),
    "virl-vl": (Split("id", 48), Split("rule-ood", 48, absolute_action=False),
                Split("visual-ood", 18, ordered=True, source_key="visual-ood")),
}
GP_SEED, VIRL_SEED = 42, 12
DEFAULT_SOURCES = {"id": "bundled:helsinki", "visual-ood": "bundled:helsinki-ood"}


def release_sources(data_dir: Path, env=None) -> dict[str, str]:
    """V-IRL release folders when present: `$SFTVSRL_VIRL_RELEASE` / `$SFTVSRL_VIRL_VLN_MINI`, else
    `DATA_DIR/nyc_1k_routes` and `DATA_DIR/VLN_mini` (the paper's ID and visual-OOD route sets)."""
    import os

    env = os.environ if env is None else env
    found = {}
    for key, var, folder in (("id", "SFTVSRL_VIRL_RELEASE", "nyc_1k_routes"),
                             ("visual-ood", "SFTVSRL_VIRL_VLN_MINI", "VLN_mini")):
        path = env.get(var) or (str(Path(data_dir) / folder) if (Path(data_dir) / folder).is_dir() else None)
        if path:
            found[key] = path
    return found


class EvalError(ValueError):
    """A bad evaluation request (message shown as is)."""


@dataclass
class EvalConfig:
    task: str
    models: list[str]
    splits: list[str] | None = None
    episodes: int | None = None           # per split; None: the paper's count
    seed: int | None = None
    max_tokens: int | None = None
    concurrency: int = 4
    sources: dict[str, str] = field(default_factory=dict)
    recognition: bool = False             # GP-VL recognition protocol: one attempt, no verification

    def __post_init__(self) -> None:
        if self.task not in PROTOCOLS:
            raise EvalError(f"unknown task {self.task!r}; use one of {', '.join(PROTOCOLS)}")
        if self.recognition and self.task != "gp-vl":
            raise EvalError("the recognition protocol is a gp-vl evaluation")
        names = [s.name for s in PROTOCOLS[self.task]]
        self.splits = list(self.splits or names)
        bad = [s for s in self.splits if s not in names]
        if bad:
            raise EvalError(f"unknown split(s) {bad} for {self.task}; use {', '.join(names)}")
        if not self.models:
            raise EvalError("name at least one model")
        if len(set(self.models)) != len(self.models):
            raise EvalError("a model is named twice")
        if self.episodes is not None and self.episodes < 1:
            raise EvalError("episodes must be at least 1")
        self.sources = {**DEFAULT_SOURCES, **(self.sources or {})}

    def split_objs(self) -> list[Split]:
        return [s for s in PROTOCOLS[self.task] if s.name in self.splits]

    @property
    def key(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "concurrency"}
        if not self.task.startswith("virl"):
            data.pop("sources")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


def split_instances(config: EvalConfig, split: Split) -> list[Instance]:
    """The instances every model plays for one split (identical for all models: paired)."""
    n = config.episodes or split.default_n
    if config.task.startswith("gp"):
        from game.gp.deal import EVAL_CONFIGS, evaluation_hands

        rule = EVAL_CONFIGS[split.gp_config].rule.value
        seed = GP_SEED if config.seed is None else config.seed
        extra = {"verify_iter": 1, "enable_verification": False} if config.recognition else {}
        return [Instance(config.task, {"deal_id": h.id, "rule": rule, **extra})
                for h in evaluation_hands(split.gp_config, n, seed)]
    from .tasks import virl_data

    source = config.sources.get(split.source_key) or DEFAULT_SOURCES[split.source_key]
    seed = VIRL_SEED if config.seed is None else config.seed
    out = []
    if split.ordered:
        n_routes = len(virl_data(source).routes)
        n = min(n, n_routes) if config.episodes is None else n
        for i in range(n):
            out.append(Instance(config.task, {"source": source, "route": i % n_routes, "seed": seed * 1000 + i,
                                              "absolute_action": split.absolute_action}))
    else:
        for i in range(n):
            out.append(Instance(config.task, {"source": source, "seed": seed * 1000 + i,
                                              "absolute_action": split.absolute_action}))
    return out


# ------------------------------------------------------------------------------------- running
class Progress:
    """A one-line progress bar on a stream (stderr by default)."""

    def __init__(self, total: int, done: int = 0, stream=None, label: str = "episodes") -> None:
        self.total, self.done, self.label = total, done, label
        self.stream = stream if stream is not None else sys.stderr
        self.start, self.start_done = time.monotonic(), done
        self.draw()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.draw()

    def draw(self, end: str = "") -> None:
        width = 30
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.label}  {rate:.2f}/s{end}")
        self.stream.flush()

    def close(self) -> None:
        self.draw("\n")


def find_resumable(store: Store, config: EvalConfig) -> dict | None:
    runs = store.list_runs(config_key=config.key, limit=1)
    return runs[0] if runs else None


async def run_evaluation(store: Store, players: Callable[[str], object], config: EvalConfig, *,
                         run_id: str | None = None, on_progress: Callable[[int, int], None] | None = None) -> str:
    """Run (or resume, when `run_id` names an existing run) an evaluation; returns the run id.

    `players(name)` returns a fresh participant for a model (e.g. `ModelPool.player`)."""
    items = [(s.name, i, inst) for s in config.split_objs() for i, inst in enumerate(split_instances(config, s))]
    total = len(items) * len(config.models)
    if run_id is None or store.get_run(run_id) is None:
        run_id = store.create_run(task=config.task, config=config.to_dict(), config_key=config.key, total=total,
                                  run_id=run_id)
    store.update_run(run_id, status="running", total=total, error=None)
    existing: dict[tuple, dict] = {}
    for ep in store.run_episodes(run_id):
        key = (ep["eval_split"], ep["eval_index"], ep["participant"])
        if key not in existing or ep["status"] == "finished":
            existing[key] = ep
    done = sum(1 for ep in existing.values() if ep["status"] == "finished")
    store.update_run(run_id, done=done)
    if on_progress:
        on_progress(done, total)
    limits = {m: asyncio.Semaphore(max(1, config.concurrency)) for m in config.models}
    counter = {"done": done}

    async def one(split: str, index: int, instance: Instance, model: str) -> None:
        prior = existing.get((split, index, model))
        async with limits[model]:
            player = players(model)
            kwargs = dict(eval_link={"eval_run_id": run_id, "eval_split": split, "eval_index": index},
                          group_id=f"{run_id}:{split}:{index}", settings={"eval_run_id": run_id},
                          stream_deltas=False)
            if prior is not None:
                kwargs.update(episode_id=prior["id"], resume=True)
            async for _ in play(player, instance, store, **kwargs):
                pass
        counter["done"] += 1
        store.update_run(run_id, done=counter["done"])
        if on_progress:
            on_progress(counter["done"], total)

    jobs = [one(split, i, inst, m) for split, i, inst in items for m in config.models
            if existing.get((split, i, m), {}).get("status") != "finished"]
    try:
        await asyncio.gather(*jobs)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) else "error"
        store.update_run(run_id, status=status, error=None if status == "interrupted" else str(exc))
        raise
    summary = summarize(store, run_id)
    failed = summary["errors"]
    store.update_run(run_id, status="finished" if not failed else "incomplete", summary=summary,
                     done=counter["done"])
    return run_id


# ------------------------------------------------------------------------------------- metrics
def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def summarize(store: Store, run_id: str) -> dict:
    """Metrics per (model, split) and the paired comparison, from the stored episodes."""
    run = store.get_run(run_id)
    config = run["config"]
    task = config["task"]
    eps = [e for e in store.run_episodes(run_id)]
    finished: dict[tuple, dict] = {}
    errors = 0
    for e in eps:
        if e["status"] == "finished":
            finished[(e["eval_split"], e["eval_index"], e["participant"])] = e
    expected = run["total"]
    errors = expected - len(finished)
    error_messages: dict[str, int] = {}
    for e in eps:
        if e["status"] == "error" and (e["eval_split"], e["eval_index"], e["participant"]) not in finished:
            msg = f"{e['participant']}: {e['error']}"
            error_messages[msg] = error_messages.get(msg, 0) + 1
    metrics: dict[str, dict[str, dict]] = {}
    for (split, index, model), e in finished.items():
        m = metrics.setdefault(model, {}).setdefault(split, {"episodes": 0, "success": 0, "exact_success": 0,
                                                              "steps": 0, "outcomes": {}, "correct_steps": 0})
        m["episodes"] += 1
        m["success"] += bool(e["success"])
        m["exact_success"] += bool(e["exact_success"])
        for s in store.steps(e["id"], prompts=False):
            m["steps"] += 1
            cls = _reference_class(task, s["reward"])
            m.setdefault("reward_classes", {})[cls] = m.setdefault("reward_classes", {}).get(cls, 0) + 1
            m["outcomes"][s["outcome"]] = m["outcomes"].get(s["outcome"], 0) + 1
            m["correct_steps"] += s["outcome"] == "correct"
    for model, splits in metrics.items():
        for split, m in splits.items():
            n, steps = m["episodes"], m["steps"]
            m["success_rate"] = m["success"] / n if n else 0.0
            m["success_se"] = binomial_se(m["success_rate"], n)
            m["exact_success_rate"] = m["exact_success"] / n if n else 0.0
            m["per_step_accuracy"] = m["correct_steps"] / steps if steps else 0.0
            m["per_step_se"] = binomial_se(m["per_step_accuracy"], steps)
            m["outcome_rates"] = {k: v / steps for k, v in sorted(m["outcomes"].items())} if steps else {}
            # the reference logger's rates: per step by reward class, CORRECT_SOLUTION per trajectory
            ref = {k: v / steps for k, v in sorted(m.pop("reward_classes", {}).items())} if steps else {}
            if task.startswith("gp"):
                ref["CORRECT_SOLUTION"] = m["success_rate"]
            m["reference_rates"] = ref
            if task == "gp-vl":
                m["recognition_accuracy"] = 1 - m["outcomes"].get("wrong_cards", 0) / steps if steps else 0.0
    paired = []
    models = config["models"]
    for split in config["splits"]:
        for a, b in combinations(models, 2):
            counts = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
            indices = {i for (s, i, _m) in finished if s == split}
            n = 0
            for i in sorted(indices):
                ea, eb = finished.get((split, i, a)), finished.get((split, i, b))
                if ea is None or eb is None:
                    continue
                n += 1
                sa, sb = bool(ea["success"]), bool(eb["success"])
                counts["both" if sa and sb else "only_a" if sa else "only_b" if sb else "neither"] += 1
            paired.append({"split": split, "a": a, "b": b, "n": n, **counts})
    return {"run_id": run_id, "task": task, "models": models, "splits": config["splits"], "metrics": metrics,
            "paired": paired, "errors": errors, "expected": expected, "error_messages": error_messages}


_GP_CLASSES = {5.0: "CORRECT_SOLUTION", 1.0: "PARTIAL_SOLUTION", -1.0: "NO_SOLUTION", -1.5: "INCORRECT_VISION",
               -2.0: "INCORRECT_NUMBER", -3.0: "ILLEGAL_FORMULA"}
_VIRL_CLASSES = {1.0: "CORRECT_ACTION", -1.0: "INCORRECT_ACTION", -1.5: "INCORRECT_OBS"}


def _reference_class(task: str, reward: float) -> str:
    """The reference logger's class of one step reward (the step-limit −1 counts as NO_SOLUTION /
    INCORRECT_ACTION; sums not in the table, and GP's 0, are AGGREGATED_ERROR)."""
    table = _GP_CLASSES if task.startswith("gp") else _VIRL_CLASSES
    return table.get(float(reward), "AGGREGATED_ERROR")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown_table(summary: dict) -> str:
    task, splits, models = summary["task"], summary["splits"], summary["models"]
    virl = task.startswith("virl")
    lines = [f"## {task} — run `{summary['run_id']}`", ""]
    headline = "per-step accuracy" if virl else "episode success rate"
    lines.append(f"**{headline}** (%, ± binomial s.e.)")
    lines.append("")
    lines.append("| model | " + " | ".join(splits) + " |")
    lines.append("|---|" + "---|" * len(splits))
    for model in models:
        cells = []
        for split in splits:
            m = summary["metrics"].get(model, {}).get(split)
            if not m:
                cells.append("—")
            elif virl:
                cells.append(f"{_pct(m['per_step_accuracy'])} ± {_pct(m['per_step_se'])} ({m['steps']} steps)")
            else:
                cells.append(f"{_pct(m['success_rate'])} ± {_pct(m['success_se'])} (n={m['episodes']})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "**details**", "",
              "| model | split | episodes | success % | exact success % | per-step acc % |"
              + (" recognition % |" if task == "gp-vl" else "") + " step outcomes |",
              "|---|---|---|---|---|---|" + ("---|" if task == "gp-vl" else "") + "---|"]
    for model in models:
        for split in splits:
            m = summary["metrics"].get(model, {}).get(split)
            if not m:
                continue
            outcomes = ", ".join(f"{k} {_pct(v)}%" for k, v in m["outcome_rates"].items())
            row = (f"| {model} | {split} | {m['episodes']} | {_pct(m['success_rate'])} ± {_pct(m['success_se'])} | "
                   f"{_pct(m['exact_success_rate'])} | {_pct(m['per_step_accuracy'])} |")
            if task == "gp-vl":
                row += f" {_pct(m.get('recognition_accuracy', 0.0))} |"
            lines.append(row + f" {outcomes} |")
    if summary["paired"]:
        lines += ["", "**paired comparison** (same instances; episode success)", "",
                  "| split | A | B | n | both | only A | only B | neither |", "|---|---|---|---|---|---|---|---|"]
        for p in summary["paired"]:
            lines.append(f"| {p['split']} | {p['a']} | {p['b']} | {p['n']} | {p['both']} | {p['only_a']} | "
                         f"{p['only_b']} | {p['neither']} |")
    if summary["errors"]:
        lines += ["", f"_{summary['errors']} of {summary['expected']} episodes did not finish "
                      "(model errors or interruption): run again with --resume._"]
        for msg, n in sorted(summary.get("error_messages", {}).items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"- {n} × {msg}")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    """Grouped bars: one group per model, one bar per split, binomial error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, splits, models = summary["task"], summary["splits"], summary["models"]
    virl = task.startswith("virl")
    key, se_key = ("per_step_accuracy", "per_step_se") if virl else ("success_rate", "success_se")
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(models) * max(1, len(splits)) / 2, 4), dpi=120)
    width = 0.8 / max(1, len(splits))
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for j, split in enumerate(splits):
        xs, ys, es = [], [], []
        for i, model in enumerate(models):
            m = summary["metrics"].get(model, {}).get(split)
            xs.append(i + (j - (len(splits) - 1) / 2) * width)
            ys.append(100 * m[key] if m else 0.0)
            es.append(100 * m[se_key] if m else 0.0)
        bars = ax.bar(xs, ys, width, yerr=es, capsize=3, label=split, color=colors[j % len(colors)])
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel(("per-step accuracy" if virl else "episode success") + " (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{task}: in-distribution vs out-of-distribution")
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(store: Store, run_id: str, out_dir: Path) -> dict:
    """table.md, plot.png, summary.json and `<model>__<split>.jsonl` (one line per step)."""
    from .export import step_line

    summary = summarize(store, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(markdown_table(summary), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    plot(summary, out_dir / "plot.png")
    files: dict[str, list[str]] = {}
    for ep in store.run_episodes(run_id):
        name = f"{ep['participant']}__{ep['eval_split']}.jsonl"
        for s in store.steps(ep["id"], prompts=False):
            files.setdefault(name, []).append(json.dumps(step_line(ep, s), ensure_ascii=False) + "\n")
    for name, lines in files.items():
        (out_dir / name).write_text("".join(lines), encoding="utf-8")
    return summary


def run_artifacts(store: Store, run_id: str) -> dict[str, bytes]:
    """table.md, summary.json and plot.png of a run, as bytes (for bundles)."""
    import tempfile

    summary = summarize(store, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        png = plot(summary, Path(tmp) / "plot.png").read_bytes()
    return {"table.md": markdown_table(summary).encode(), "summary.json": json.dumps(summary, indent=1).encode(),
            "plot.png": png}
