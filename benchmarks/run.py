"""`make bench`: runs every `benchmarks/bench_*.py` module's `run()` and prints its rows.

Each benchmark times our implementation against a baseline run in the same process and prints
the ratio, plus the target it is held to. Benchmarks never fail the build; they report.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(fn, *, min_time: float = 0.3, max_reps: int = 1_000_000) -> float:
    """Seconds per call of `fn()`, repeated until `min_time` has passed (best of 3 rounds)."""
    best = float("inf")
    for _ in range(3):
        reps, start = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time or reps >= max_reps:
                break
        best = min(best, elapsed / reps)
    return best


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run the block with `n` torch intra-op threads (in-process model rows; the server rows cap
    theirs with OMP_NUM_THREADS): on a small shared machine, more threads only add barrier stalls
    to a 1 M-parameter model's tiny kernels."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def report(name: str, ours: float, unit: str, *, baseline: float | None = None,
           baseline_name: str = "baseline", target: str = "", higher_is_better: bool = True) -> None:
    """Print one benchmark row: our value, the baseline's, their ratio and the target."""
    line = f"{name:<46} {ours:>12,.1f} {unit:<10}"
    if baseline is not None and baseline > 0:
        ratio = ours / baseline if higher_is_better else baseline / ours
        line += f"  {ratio:6.1f}x vs {baseline_name} ({baseline:,.1f})"
    if target:
        line += f"  [target {target}]"
    print(line, flush=True)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    only = set(argv)
    for path in sorted(HERE.glob("bench_*.py")):
        if only and path.stem not in only and path.stem.removeprefix("bench_") not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {path.stem}", flush=True)
        module.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
