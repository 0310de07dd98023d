"""The concurrent executor of the evaluation protocol (`game.protocol`): several configured
models (any backend, over HTTP or in-process) play the same instances (paired), every step is
stored before it is reported, runs resume; outputs are a Markdown table, a PNG plot and
reference-style JSONL.

What is evaluated — splits, seeded instance lists, metrics, binomial SEs, the paired comparison —
is `game.protocol`'s, shared with the batched in-process executor (`models.train.evaluate`): both
visit identical instance lists and compute the same metrics. This module adds the run: an
`EvalConfig` (task, models, splits, episodes, seed, concurrency, route sources), the store, the
progress and the outputs.

Resume: a run is keyed by its configuration (and its shard: `run_items` with `shard=(i, N)` plays
`protocol.shard` of the item list; merging shards is `app.shards`); every (split, index, model)
item is one stored episode. On resume, finished items are skipped and interrupted or failed ones
continue from their last committed step (the stored replies are fed back to the engine, no model
call repeated).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from game import protocol
from game.gp.phrasings import MAX_PHRASING_CHARS, MAX_PHRASINGS
from game.tasks import Instance, InstanceError, Split, get_task

from .charts import colour, style
from .export import step_line
from .runner import play
from .store import Store


def release_sources(data_dir: Path, env=None) -> dict[str, str]:
    """V-IRL release folders when present, by protocol stream key: `id` = `$SFTVSRL_VIRL_RELEASE`
    or `DATA_DIR/nyc_1k_routes`, `ood` = `$SFTVSRL_VIRL_VLN_MINI` or `DATA_DIR/VLN_mini` (the
    paper's ID and visual-OOD route sets)."""
    env = os.environ if env is None else env
    found = {}
    for key, var, folder in (("id", "SFTVSRL_VIRL_RELEASE", "nyc_1k_routes"),
                             ("ood", "SFTVSRL_VIRL_VLN_MINI", "VLN_mini")):
        path = env.get(var) or (str(Path(data_dir) / folder) if (Path(data_dir) / folder).is_dir() else None)
        if path:
            found[key] = path
    return found


class EvalError(ValueError):
    """A bad evaluation request (message shown as is)."""


# The one bound on an evaluation's size, whoever starts it (API, UI, CLI): per split, and the
# concurrent episodes per model. The paper's largest list is 234 hands; 10,000 leaves room.
MAX_EPISODES_PER_SPLIT = 10_000
MAX_CONCURRENCY = 64


@dataclass
class EvalConfig:
    task: str
    models: list[str]
    splits: list[str] | None = None
    episodes: int | None = None           # per split; None: the paper's count
    seed: int | None = None               # instance-stream seed; None: the protocol's (GP 42, V-IRL 0)
    max_tokens: int | None = None
    concurrency: int = 4
    sources: dict[str, str] = field(default_factory=dict)   # V-IRL route source per stream key (id, ood)
    recognition: bool = False             # GP-VL recognition protocol: one attempt, no verification
    phrasings: list[str] | None = None    # GP-L `reworded`: the rule clause in these words (a researcher's)

    def __post_init__(self) -> None:
        try:
            spec = get_task(self.task)
        except InstanceError as exc:
            raise EvalError(str(exc)) from None
        if self.recognition and not spec.recognition:
            raise EvalError(f"the recognition protocol is a gp-vl evaluation, not {self.task}")
        names = list(spec.split_names)
        self.splits = list(self.splits or names)
        bad = [s for s in self.splits if s not in names]
        if bad:
            raise EvalError(f"unknown split(s) {bad} for {self.task}; use {', '.join(names)}")
        if not self.models:
            raise EvalError("name at least one model")
        if len(set(self.models)) != len(self.models):
            raise EvalError("a model is named twice")
        if self.episodes is not None and not 1 <= self.episodes <= MAX_EPISODES_PER_SPLIT:
            raise EvalError(f"episodes per split must be between 1 and {MAX_EPISODES_PER_SPLIT:,}, "
                            f"got {self.episodes:,}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise EvalError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {self.concurrency}")
        if self.phrasings is not None:
            rewording = [s.name for s in spec.splits if s.phrasings]
            if not rewording:
                raise EvalError(f"phrasings reword the rule of a split like GP-L's reworded; {self.task} has none")
            if not any(s in rewording for s in self.splits):
                raise EvalError(f"phrasings apply to the {', '.join(rewording)} split: evaluate it too")
            if not isinstance(self.phrasings, list) or not all(isinstance(x, str) for x in self.phrasings):
                raise EvalError("phrasings must be a list of strings")
            self.phrasings = [x.strip() for x in self.phrasings if x.strip()]
            if not 1 <= len(self.phrasings) <= MAX_PHRASINGS:
                raise EvalError(f"give between 1 and {MAX_PHRASINGS:,} phrasings")
            if any(len(x) > MAX_PHRASING_CHARS for x in self.phrasings):
                raise EvalError(f"a phrasing has at most {MAX_PHRASING_CHARS} characters")
        streams = {s.stream for s in spec.splits}   # keep only the sources this task reads
        self.sources = {k: v for k, v in (self.sources or {}).items() if k in streams}

    def split_objs(self) -> list[Split]:
        return [s for s in get_task(self.task).splits if s.name in (self.splits or ())]

    @property
    def key(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "concurrency"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


def split_instances(config: EvalConfig, split: Split) -> list[Instance]:
    """The instances every model plays for one split: the protocol's list (paired)."""
    return protocol.instances(config.task, split.name, config.episodes, config.seed, config.sources,
                              config.recognition, config.phrasings if split.phrasings else None)


# ------------------------------------------------------------------------------------- running
class Progress:
    """A one-line progress bar on a stream (stderr by default)."""

    def __init__(self, total: int, done: int = 0, stream=None, label: str = "episodes") -> None:
        self.total, self.done, self.label = total, done, label
        self.stream = stream if stream is not None else sys.stderr
        self.start, self.start_done = time.monotonic(), done
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


def run_key(config: EvalConfig, shard: tuple[int, int] | None = None) -> str:
    """The store key of a run of `config`, or of its shard (i, N): resume finds runs by it."""
    return config.key if shard is None else f"{config.key}/shard-{shard[0]}-of-{shard[1]}"


def find_resumable(store: Store, config: EvalConfig, shard: tuple[int, int] | None = None) -> dict | None:
    runs = store.list_runs(config_key=run_key(config, shard), limit=1)
    return runs[0] if runs else None


def create_run(store: Store, config: EvalConfig, shard: tuple[int, int] | None = None, *, total: int = 0,
               run_id: str | None = None) -> str:
    """A new stored run of `config` (of its shard (i, N): the config records `"shard": [i, N]`)."""
    stored = {**config.to_dict(), **({"shard": list(shard)} if shard else {})}
    return store.create_run(task=config.task, config=stored, config_key=run_key(config, shard), total=total,
                            run_id=run_id)


def run_items(config: EvalConfig, shard: tuple[int, int] | None = None) -> list[tuple[str, int, Instance]]:
    """What a run plays, as (split, index, instance): every split's protocol instances in order, or
    shard (i, N) of that list (`protocol.shard`: every N-th item from i, across the splits)."""
    items = [(s.name, i, inst) for s in config.split_objs() for i, inst in enumerate(split_instances(config, s))]
    return items if shard is None else protocol.shard(items, *shard)


async def run_evaluation(store: Store, players: Callable[[str], object], config: EvalConfig, *,
                         run_id: str | None = None, on_progress: Callable[[int, int], None] | None = None,
                         shard: tuple[int, int] | None = None,
                         items: list[tuple[str, int, Instance]] | None = None) -> str:
    """Run (or resume, when `run_id` names an existing run) an evaluation; returns the run id.

    `players(name)` returns a fresh participant for a model (e.g. `ModelPool.player`). `shard=(i, N)`
    plays only shard i of N (see `app.shards`). `items` are `run_items(config, shard)` when the caller
    built them already. The instance list, the resume scan and the summary are computed in a thread,
    and each model plays through `concurrency` workers, so no size of evaluation holds the event loop
    (no task per episode is created up front)."""
    if items is None:
        items = await asyncio.to_thread(run_items, config, shard)
    total = len(items) * len(config.models)
    if run_id is None or store.get_run(run_id) is None:
        run_id = create_run(store, config, shard, total=total, run_id=run_id)
    store.update_run(run_id, status="running", total=total, error=None)
    existing: dict[tuple, dict] = {}
    for ep in await asyncio.to_thread(store.run_episodes, run_id):
        key = (ep["eval_split"], ep["eval_index"], ep["participant"])
        if key not in existing or ep["status"] == "finished":
            existing[key] = ep
    done = sum(1 for ep in existing.values() if ep["status"] == "finished")
    store.update_run(run_id, done=done)
    if on_progress:
        on_progress(done, total)
    counter = {"done": done}

    async def one(split: str, index: int, instance: Instance, model: str) -> None:
        prior = existing.get((split, index, model))
        player = players(model)
        kwargs: dict[str, Any] = dict(eval_link={"eval_run_id": run_id, "eval_split": split, "eval_index": index},
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

    async def worker(model: str, todo) -> None:
        for split, i, inst in todo:   # one shared iterator per model: each item is taken once
            await one(split, i, inst, model)

    workers = []
    for m in config.models:
        todo = iter([(split, i, inst) for split, i, inst in items
                     if existing.get((split, i, m), {}).get("status") != "finished"])
        workers += [worker(m, todo) for _ in range(max(1, config.concurrency))]
    try:
        await asyncio.gather(*workers)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) else "error"
        store.update_run(run_id, status=status, error=None if status == "interrupted" else str(exc))
        raise
    summary = await asyncio.to_thread(summarize, store, run_id)
    failed = summary["errors"]
    store.update_run(run_id, status="finished" if not failed else "incomplete", summary=summary,
                     done=counter["done"])
    return run_id


# ------------------------------------------------------------------------------------- metrics
def summarize(store: Store, run_id: str) -> dict:
    """The protocol's metrics per (model, split) and the paired comparison, from the stored episodes."""
    run = store.get_run(run_id)
    assert run is not None, f"no evaluation run {run_id}"
    config = run["config"]
    task = config["task"]
    eps = store.run_episodes(run_id)
    finished = {(e["eval_split"], e["eval_index"], e["participant"]): e for e in eps if e["status"] == "finished"}
    expected = run["total"]
    error_messages: dict[str, int] = {}
    for e in eps:
        if e["status"] == "error" and (e["eval_split"], e["eval_index"], e["participant"]) not in finished:
            msg = f"{e['participant']}: {e['error']}"
            error_messages[msg] = error_messages.get(msg, 0) + 1
    scores: dict[str, dict[str, list]] = {}
    for (split, _index, model), e in sorted(finished.items(), key=lambda kv: kv[0][1]):
        score = protocol.EpisodeScore.of_steps(e["success"], store.steps(e["id"], prompts=False), e["exact_success"])
        scores.setdefault(model, {}).setdefault(split, []).append(score)
    metrics = {model: {split: protocol.split_metrics(task, s) for split, s in splits.items()}
               for model, splits in scores.items()}
    paired = []
    for split in config["splits"]:
        results = {m: {i: bool(e["success"]) for (s, i, mm), e in finished.items() if s == split and mm == m}
                   for m in config["models"]}
        paired += protocol.paired(split, results)
    return {"run_id": run_id, "task": task, "models": config["models"], "splits": config["splits"],
            "headline": get_task(task).headline, "metrics": metrics, "paired": paired,
            "errors": expected - len(finished), "expected": expected, "error_messages": error_messages}


_HEADLINE_LABEL = {"success_rate": "episode success rate", "per_step_accuracy": "per-step accuracy"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown_table(summary: dict) -> str:
    task, splits, models = summary["task"], summary["splits"], summary["models"]
    spec = get_task(task)
    per_step = spec.headline == "per_step_accuracy"
    lines = [f"## {task} — run `{summary['run_id']}`", ""]
    lines.append(f"**{_HEADLINE_LABEL[spec.headline]}** (%, ± binomial s.e.)")
    lines.append("")
    lines.append("| model | " + " | ".join(splits) + " |")
    lines.append("|---|" + "---|" * len(splits))
    for model in models:
        cells = []
        for split in splits:
            m = summary["metrics"].get(model, {}).get(split)
            if not m:
                cells.append("—")
            elif per_step:
                cells.append(f"{_pct(m['per_step_accuracy'])} ± {_pct(m['per_step_se'])} ({m['steps']} steps)")
            else:
                cells.append(f"{_pct(m['success_rate'])} ± {_pct(m['success_se'])} (n={m['episodes']})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    exact = spec.exact_arithmetic  # exact success is a GeneralPoints notion (no column for V-IRL)
    lines += ["", "**details**", "",
              "| model | split | episodes | success % |" + (" exact success % |" if exact else "")
              + " per-step acc % |" + (" recognition % |" if spec.recognition else "") + " step outcomes |",
              "|---|---|---|---|" + ("---|" if exact else "") + "---|" + ("---|" if spec.recognition else "") + "---|"]
    for model in models:
        for split in splits:
            m = summary["metrics"].get(model, {}).get(split)
            if not m:
                continue
            outcomes = ", ".join(f"{k} {_pct(v)}%" for k, v in m["outcome_rates"].items())
            row = (f"| {model} | {split} | {m['episodes']} | {_pct(m['success_rate'])} ± {_pct(m['success_se'])} | "
                   + (f"{_pct(m['exact_success_rate'])} | " if exact else "") + f"{_pct(m['per_step_accuracy'])} |")
            if spec.recognition:
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


def plot(summary: dict, path: Path, look: str = "light") -> Path:
    """Grouped bars: one group per model, one bar per split, binomial error bars; in `look`
    (`app.charts`: the page's, or presenter mode's dark with large type). The legend sits under the
    axes and the bars' values below the title, so nothing covers a bar or its error bar."""
    task, splits, models = summary["task"], summary["splits"], summary["models"]
    headline = get_task(task).headline
    key, se_key = headline, ("per_step_se" if headline == "per_step_accuracy" else "success_se")
    big = look == "presenter"
    with style(look) as plt:
        width_in = max(4.8, 1.8 + 1.6 * len(models) * max(1, len(splits)) / 2) * (1.45 if big else 1)
        fig, ax = plt.subplots(figsize=(width_in, 6.2 if big else 4.4), dpi=120 if not big else 100)
        width = 0.8 / max(1, len(splits))
        for j, split in enumerate(splits):
            xs, ys, es = [], [], []
            for i, model in enumerate(models):
                m = summary["metrics"].get(model, {}).get(split)
                xs.append(i + (j - (len(splits) - 1) / 2) * width)
                ys.append(100 * m[key] if m else 0.0)
                es.append(100 * m[se_key] if m else 0.0)
            ax.bar(xs, ys, width, yerr=es, capsize=5 if big else 3, label=split, color=colour(j, look),
                          error_kw={"ecolor": "white" if big else "black", "elinewidth": 2 if big else 1})
            for x, y, e in zip(xs, ys, es):   # each value above its error bar, never across it
                ax.annotate(f"{y:.1f}", (x, min(y + e, 100)), xytext=(0, 4), textcoords="offset points",
                            ha="center", va="bottom", fontsize=(15 if big else 8), color="white" if big else "black")
        ax.set_xticks(range(len(models)), models)
        ax.set_ylabel(_HEADLINE_LABEL[headline] + " (%)")
        ax.set_ylim(0, 118)              # room for a value label above a bar at 100 %
        ax.set_yticks(range(0, 101, 20))
        ax.set_title(f"{task}: in-distribution vs out-of-distribution", pad=14)
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=max(1, len(splits)))
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
    return path


def write_outputs(store: Store, run_id: str, out_dir: Path) -> dict:
    """table.md, plot.png, summary.json and `<model>__<split>.jsonl` (one line per step)."""
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
    summary = summarize(store, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        png = plot(summary, Path(tmp) / "plot.png").read_bytes()
    return {"table.md": markdown_table(summary).encode(), "summary.json": json.dumps(summary, indent=1).encode(),
            "plot.png": png}
