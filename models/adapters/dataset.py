"""Dataset rows for the trainer adapters: the paper's instance streams as TRL rows and verl parquet.

Splits are `train` and the evaluation protocol's (`_engine.splits`: gp-l id, rule-ood; gp-vl id,
rule-ood, visual-ood; virl-l id, rule-ood, streets; virl-vl id, rule-ood, visual-ood). Instances
are the registry's JSON form `{"task", "params"}`.

- `trl_rows(task, split, n)`: rows for `GRPOTrainer(environment_factory=...)`: an empty user
  `prompt` (the environment's `reset` appends the paper's prompt), `task`, `instance` (JSON),
  `environment` (for `trl.ENVIRONMENTS` routing) and, for the VL tasks, `images` (the first
  observation). `trl_dataset(...)` wraps them in a `datasets.Dataset`.
- `verl_rows(task, split, n)`: rows in verl's RL dataset layout: `data_source`
  (`sftvsrl/<task>`), `prompt` (the paper's prompt as one user message; `<image>` first for VL),
  `ability`, `reward_model` (`style: rule`, `ground_truth`: the instance JSON), `extra_info`
  (`split`, `index`, `interaction_kwargs` = `{"name": <task>, "task": <task>, "params": {...}}`),
  `agent_name` (`tool_agent`), and for VL `images` (PNG bytes).
- `max_user_turns(rows)`: the smallest verl `max_user_turns` that never cuts an episode of
  `rows` short (GP: the 5 tries; V-IRL: 2 tries × the longest rail).

CLI: `python -m models.adapters.dataset --task gp-l --split train --n 2000 --out data/verl`
writes `data/verl/gp-l-train.parquet` and prints the `max_user_turns` to use.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any, Sequence

from game.tasks import TASKS, get_task

from ._engine import instance_json, instances, open_episode

ABILITY = {"gp": "arithmetic", "virl": "navigation"}     # verl's `ability` per task family
MAX_ROWS = 1_000_000


def _instances(task: str, split: str, n: int, offset: int):
    if not 0 <= n <= MAX_ROWS:
        raise ValueError(f"n must be between 0 and {MAX_ROWS}")
    return instances(task, split, n, offset=offset)


def trl_rows(task: str, split: str, n: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """Rows for TRL's `environment_factory` (see the module docstring)."""
    rows = []
    for inst in _instances(task, split, n, offset):
        row: dict[str, Any] = {"prompt": [{"role": "user", "content": ""}], "task": task,
                               "instance": instance_json(inst), "environment": task}
        if inst.vision:
            row["images"] = [open_episode(inst).image()]
        rows.append(row)
    return rows


def trl_dataset(task: str, split: str, n: int, *, offset: int = 0):
    """`trl_rows` as a `datasets.Dataset`."""
    # lazy: `datasets` is optional (the `train` extra); only TRL training needs it
    from datasets import Dataset

    return Dataset.from_list(trl_rows(task, split, n, offset=offset))


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def verl_rows(task: str, split: str, n: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """Rows in verl's multi-turn RL dataset layout (see the module docstring)."""
    rows = []
    for index, inst in enumerate(_instances(task, split, n, offset), start=offset):
        ep = open_episode(inst)
        prompt = ep.prompt()
        row: dict[str, Any] = {
            "data_source": f"sftvsrl/{task}",
            "prompt": [{"role": "user", "content": ("<image>" + prompt) if inst.vision else prompt}],
            "ability": ABILITY[get_task(task).family],
            "reward_model": {"style": "rule", "ground_truth": instance_json(inst)},
            "extra_info": {"split": split, "index": index,
                           "interaction_kwargs": {"name": task, **inst.to_dict()}},
            "agent_name": "tool_agent",
        }
        if inst.vision:
            row["images"] = [{"bytes": _png(ep.image())}]
        rows.append(row)
    return rows


def write_parquet(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows as a parquet file (pyarrow)."""
    # lazy: pyarrow is optional (the `train` extra); only verl's parquet files need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def max_user_turns(rows: Sequence[dict]) -> int:
    """The verl `max_user_turns` that lets every episode of `rows` use its whole budget (one user
    turn per graded reply): GP 5 (the tries per hand); V-IRL 2 × the longest rail (2 tries per
    position)."""
    if not rows:
        raise ValueError("max_user_turns needs the rows (V-IRL's limit depends on the longest rail)")
    return max(open_episode(_instance_of(r)).session.max_graded for r in rows)


def _instance_of(row: dict) -> Any:
    if "instance" in row:
        return row["instance"]
    if "reward_model" in row:
        return row["reward_model"]["ground_truth"]
    return row


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.adapters.dataset",
                                 description="Write verl parquet files for the paper's instance streams.")
    ap.add_argument("--task", action="append", choices=list(TASKS), required=True, help="task (repeatable)")
    ap.add_argument("--split", action="append", required=True,
                    help="split (repeatable): train or an evaluation split (id, rule-ood, visual-ood, streets)")
    ap.add_argument("--n", type=int, default=234, help="rows per task and split (default 234)")
    ap.add_argument("--out", default="data/verl", help="output directory (default data/verl)")
    args = ap.parse_args(argv)
    try:
        for task in args.task:
            for split in args.split:
                rows = verl_rows(task, split, args.n)
                path = write_parquet(rows, Path(args.out) / f"{task}-{split}.parquet")
                turns = f"; max_user_turns={max_user_turns(rows)}" if rows else ""
                print(f"{path}: {len(rows)} rows{turns}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
