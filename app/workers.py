"""A small process pool for CPU-bound work (dealing, solving, verifying, rendering) with a time
limit, so no request can hold the event loop or a server thread for long.

`WorkerPool.run(fn, *args)` (async, for API handlers) and `run_sync(fn, *args)` (for UI handlers,
which Gradio runs in threads) execute a picklable top-level function in a worker process and
return its result, or raise:
- `WorkTimeout` when it did not finish within `timeout_s`: the workers are killed (a spinning
  worker cannot be interrupted any other way) and a fresh pool is started on the next call;
- `WorkerUnavailable` when the pool broke (e.g. a worker was killed while this call waited).
Exceptions raised by `fn` itself come back unchanged. Workers are spawned (never forked from a
process that holds threads and model weights) and start on first use.

The time limit measures the work, not the pool's start: a fresh pool first starts every worker
and runs `_warm_worker` in each (imports, the reachable-target table) before any caller's clock
starts, so a busy machine that is slow to spawn processes never turns into a spurious timeout.
The server warms its pool at start-up (`warm`).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import multiprocessing
import threading
from typing import Any, Callable


class WorkTimeout(RuntimeError):
    """The work did not finish in time (message shown to the user as is)."""


class WorkerUnavailable(RuntimeError):
    """The worker pool broke while this call waited; retrying is safe."""


class WorkerPool:
    def __init__(self, workers: int = 2, timeout_s: float = 10.0) -> None:
        self.workers = max(1, int(workers))
        self.timeout_s = float(timeout_s)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._ready: cf.Future | None = None      # completes when every worker of `_pool` is up
        self._lock = threading.Lock()
        self.recycled = 0  # pools killed after a timeout (for tests and health)

    def _executor(self) -> tuple[cf.ProcessPoolExecutor, cf.Future]:
        """The current pool and a future that completes once all its workers have started."""
        with self._lock:
            if self._pool is None:
                pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_warm_worker)
                starts = [pool.submit(_started, self.workers) for _ in range(self.workers)]
                ready: cf.Future = cf.Future()

                def _one_done(_f, left=[len(starts)]):  # noqa: B006 - a shared countdown
                    left[0] -= 1
                    if left[0] == 0 and not ready.done():
                        ready.set_result(None)
                for f in starts:
                    f.add_done_callback(_one_done)
                self._pool, self._ready = pool, ready
            return self._pool, self._ready

    def warm(self) -> None:
        """Start every worker now (blocking, no time limit): the server calls this at start-up."""
        _pool, ready = self._executor()
        ready.result()

    def _recycle(self, pool: cf.ProcessPoolExecutor) -> None:
        """Kill `pool`'s workers (if it is still the current pool) so spinning work stops."""
        with self._lock:
            if self._pool is not pool:
                return
            self._pool = None
            self.recycled += 1
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        pool.shutdown(wait=False, cancel_futures=True)

    def _timeout_error(self, fn: Callable, timeout: float) -> WorkTimeout:
        what = getattr(fn, "__name__", "the computation")
        return WorkTimeout(f"{what} took longer than {timeout:g} s and was stopped; try simpler input")

    async def run(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        timeout = self.timeout_s if timeout is None else timeout
        pool, ready = self._executor()
        if not ready.done():
            await asyncio.wrap_future(ready)
        try:
            future = pool.submit(fn, *args)
        except (cf.process.BrokenProcessPool, RuntimeError):
            self._recycle(pool)
            raise WorkerUnavailable("the worker pool was restarting; try again") from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            self._recycle(pool)
            raise self._timeout_error(fn, timeout) from None
        except cf.process.BrokenProcessPool:
            self._recycle(pool)
            raise WorkerUnavailable("the worker pool was restarting; try again") from None

    def run_sync(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        timeout = self.timeout_s if timeout is None else timeout
        pool, ready = self._executor()
        ready.result()
        try:
            return pool.submit(fn, *args).result(timeout)
        except cf.TimeoutError:
            self._recycle(pool)
            raise self._timeout_error(fn, timeout) from None
        except (cf.process.BrokenProcessPool, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not isinstance(exc, cf.process.BrokenProcessPool) \
                    and "shutdown" not in str(exc):
                raise
            self._recycle(pool)
            raise WorkerUnavailable("the worker pool was restarting; try again") from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()


_shared: WorkerPool | None = None


def shared_pool() -> WorkerPool:
    """The process-wide pool (API and UI handlers of one server share it)."""
    global _shared
    if _shared is None:
        _shared = WorkerPool()
    return _shared


def _close_shared() -> None:
    if _shared is not None:
        _shared.close()


atexit.register(_close_shared)


def configure(workers: int, timeout_s: float) -> WorkerPool:
    """Replace the shared pool's size and time limit (the server calls this at start-up)."""
    global _shared
    if _shared is not None:
        _shared.close()
    _shared = WorkerPool(workers, timeout_s)
    return _shared


# ------------------------------------------------------------------ the jobs (top-level, picklable)
def _warm_worker() -> None:
    """Worker initializer: import the engines and build the reachable-target tables once."""
    from game.gp.deal import DealConfig, reachable_targets

    reachable_targets(DealConfig())


def _started(n: int) -> None:
    """Start-up job: held until `n` of them run at once, so the pool starts all `n` workers."""
    import time

    time.sleep(0.05)

def spin(seconds: float) -> None:
    """Busy-loop for `seconds` of CPU (tests: a job that must be stopped by the time limit)."""
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
