"""CPU work of the server (dealing, solving, verifying, rendering): cheap work answers inline, work
that can be slow runs in a fair pool of worker processes with a time limit, so no request holds
the event loop or a server thread for long and no client can starve another.

`WorkerPool.compute(fn, *args, client=…)` (async, API handlers) and `compute_sync(…)` (UI handlers,
which Gradio runs in threads) are the one way in:
- **Inline when cheap.** `app.jobs.is_cheap(fn, args)` names the bounded common cases (a deal for
  the target 24, a verify of a short text, a hand's info): they run in the caller at once (at most a
  few milliseconds, usually microseconds), never queued behind anybody's slow work.
- **Fair pool otherwise.** Jobs wait in one queue per client (the caller's key: its address); a free
  worker takes the next job round-robin over the clients with jobs waiting, and one client holds at
  most `share` workers at once (half of them, at least one), so a client flooding the pool waits
  for itself while another client's job runs on the next free worker. At most `max_queued` jobs wait
  per client (beyond: `PoolBusy`).
- **The time limit counts run time.** A job's clock starts when a worker takes it, never while it
  waits; past `timeout_s` the worker running it is killed (a spinning worker cannot be stopped any
  other way) and replaced — the other workers' jobs are not touched — and the caller gets
  `WorkTimeout`. A worker that dies under a job gives `WorkerUnavailable`. Both are answered as a
  503 with `Retry-After` (`app.services`). Exceptions raised by `fn` itself come back unchanged.
- **Nothing orphaned.** Workers are our own processes (`python -m app.workers FD PARENT_PID`), spoken
  to over a socket pair, started by the pool's dispatcher thread with `PR_SET_PDEATHSIG` = SIGKILL
  (`models.procs.die_with_parent`): they die with the server even when it is SIGKILLed, and a
  worker also exits when its socket closes. `close()` (server shutdown, and `atexit`) stops and
  reaps them. A fresh pool starts every worker and warms it (imports, the reachable-target table)
  before any job's clock starts; the server warms its pool at start-up (`warm`).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from .jobs import is_cheap, warm

ROOT = Path(__file__).resolve().parents[1]
START_FAILURES_MAX = 3   # workers dying before they are ready, in a row, before queued jobs are failed


class WorkTimeout(RuntimeError):
    """The work did not finish in time (message shown to the user as is)."""


class WorkerUnavailable(RuntimeError):
    """No worker could run this job (one died under it, or the pool is stopping); retrying is safe."""


class PoolBusy(RuntimeError):
    """This client already has as many jobs waiting as it may (message shown to the user as is)."""


@dataclass(eq=False)
class _Job:
    fn: Callable
    args: tuple
    client: str
    timeout: float
    future: cf.Future = field(default_factory=cf.Future)
    deadline: float | None = None


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    ready: bool = False
    job: _Job | None = None


class WorkerPool:
    def __init__(self, workers: int = 2, timeout_s: float = 10.0, *, share: int | None = None,
                 max_queued: int = 128) -> None:
        self.workers = max(1, int(workers))
        self.timeout_s = float(timeout_s)
        self.share = max(1, int(share) if share is not None else (self.workers + 1) // 2)
        self.max_queued = max(1, int(max_queued))
        self._lock = threading.Lock()
        self._ready_changed = threading.Condition(self._lock)
        self._queues: "OrderedDict[str, deque[_Job]]" = OrderedDict()
        self._running: dict[str, int] = {}
        self._procs: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._closed = False
        self._start_failures = 0
        self.recycled = 0      # workers killed after a timeout (tests, health)
        self.dispatched: list[str] = []   # the clients of the last jobs started, in order (tests)

    # ------------------------------------------------------------------------- the way in
    def compute_sync(self, fn: Callable, *args: Any, client: str = "", timeout: float | None = None) -> Any:
        """`fn(*args)`: inline when `app.jobs` calls it cheap, else in the pool (blocking)."""
        if is_cheap(fn, args):
            return fn(*args)
        return self.run_sync(fn, *args, client=client, timeout=timeout)

    async def compute(self, fn: Callable, *args: Any, client: str = "", timeout: float | None = None) -> Any:
        """`fn(*args)`: inline when `app.jobs` calls it cheap, else in the pool."""
        if is_cheap(fn, args):
            return fn(*args)
        return await self.run(fn, *args, client=client, timeout=timeout)

    async def run(self, fn: Callable, *args: Any, client: str = "", timeout: float | None = None) -> Any:
        """`fn(*args)` in a worker (waits its turn; `timeout` counts from when a worker takes it)."""
        return await asyncio.wrap_future(self.submit(fn, *args, client=client, timeout=timeout))

    def run_sync(self, fn: Callable, *args: Any, client: str = "", timeout: float | None = None) -> Any:
        return self.submit(fn, *args, client=client, timeout=timeout).result()

    def submit(self, fn: Callable, *args: Any, client: str = "", timeout: float | None = None) -> cf.Future:
        """Queue `fn(*args)` for `client`; the future gets its result or exception."""
        job = _Job(fn, args, str(client), self.timeout_s if timeout is None else float(timeout))
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the server is shutting down; try again")
            queue = self._queues.get(job.client)
            if queue is not None and len(queue) >= self.max_queued:
                raise PoolBusy(f"you have {len(queue)} computations waiting (limit {self.max_queued}); "
                               "wait for their answers first")
            self._queues.setdefault(job.client, deque()).append(job)
            self._start_failures = 0 if self._start_failures >= START_FAILURES_MAX else self._start_failures
            self._ensure_thread()
        self._wake()
        return job.future

    def warm(self) -> None:
        """Start every worker now and wait until all are ready (no time limit): server start-up."""
        with self._lock:
            if self._closed:
                return
            self._ensure_thread()
            self._ready_changed.wait_for(lambda: self._closed or self._start_failures >= START_FAILURES_MAX
                                         or sum(w.ready for w in self._procs) >= self.workers)

    def pids(self) -> list[int]:
        """The worker processes' ids (tests)."""
        with self._lock:
            return [w.proc.pid for w in self._procs]

    @property
    def closed(self) -> bool:
        """Whether `close` was called (a closed pool refuses new work)."""
        return self._closed

    def close(self) -> None:
        """Stop the dispatcher and the workers, reap them; waiting jobs get `WorkerUnavailable`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._ready_changed.notify_all()
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)
        with self._lock:
            procs, self._procs = self._procs, []
            waiting = [j for q in self._queues.values() for j in q]
            self._queues.clear()
        for w in procs:
            if w.job is not None:
                waiting.append(w.job)
            _close_quietly(w.conn)   # an idle worker exits on EOF
        for w in procs:
            try:
                w.proc.wait(2)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        for job in waiting:
            _fail(job, WorkerUnavailable("the server is shutting down; try again"))
        _close_quietly(self._wake_r)
        _close_quietly(self._wake_w)

    # ------------------------------------------------------------------------ dispatcher
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # closed, or the buffer is full of wake-ups already
            pass

    def _ensure_thread(self) -> None:
        if self._thread is None:
            # Workers are started from this thread, and PR_SET_PDEATHSIG fires when the thread that
            # started a process ends: it lives as long as the pool.
            self._thread = threading.Thread(target=self._loop, name="sftvsrl-workers", daemon=True)
            self._thread.start()

    def _spawn(self) -> _Worker:
        mine, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "app.workers", str(theirs.fileno()), str(os.getpid())],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env, cwd=str(ROOT))
        finally:
            theirs.close()
        return _Worker(proc, Connection(mine.detach()))

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                while len(self._procs) < self.workers and self._start_failures < START_FAILURES_MAX:
                    self._procs.append(self._spawn())
                if self._start_failures >= START_FAILURES_MAX:
                    self._fail_waiting("the worker processes fail to start (see the server log); try again")
                self._dispatch()
                waitables: list[Any] = [self._wake_r, *(w.conn for w in self._procs)]
                deadlines = [w.job.deadline for w in self._procs if w.job is not None and w.job.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = wait(waitables, timeout)
            with self._lock:
                if self._closed:
                    return
                for item in ready:
                    if item is self._wake_r:
                        self._drain_wakeups()
                    else:
                        self._receive(next(w for w in self._procs if w.conn is item))
                now = time.monotonic()
                for w in [w for w in self._procs
                          if w.job is not None and w.job.deadline is not None and w.job.deadline <= now]:
                    job = w.job
                    assert job is not None
                    self._retire(w, kill=True)
                    self.recycled += 1
                    what = getattr(job.fn, "__name__", "the computation")
                    _fail(job, WorkTimeout(f"{what} took longer than {job.timeout:g} s and was stopped; "
                                           "try simpler input"))
                self._ready_changed.notify_all()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive(self, w: _Worker) -> None:
        try:
            kind, value = w.conn.recv()
        except (EOFError, OSError, ValueError):   # the worker died
            job = w.job
            if not w.ready:
                self._start_failures += 1
            self._retire(w, kill=True)
            if job is not None:
                _fail(job, WorkerUnavailable("the worker running this computation stopped; try again"))
            return
        if kind == "ready":
            w.ready = True
            self._start_failures = 0
            return
        job, w.job = w.job, None
        if job is None:
            return
        self._running[job.client] -= 1
        if kind == "ok":
            job.future.set_result(value)
        else:
            job.future.set_exception(value)

    def _retire(self, w: _Worker, *, kill: bool) -> None:
        if w.job is not None:
            self._running[w.job.client] -= 1
        if w in self._procs:
            self._procs.remove(w)
        _close_quietly(w.conn)
        if kill and w.proc.poll() is None:
            w.proc.kill()
        try:
            w.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignored
            pass

    def _next_job(self) -> _Job | None:
        """The next job round-robin over the clients with jobs waiting, skipping clients that hold
        their share of the workers already."""
        for client in list(self._queues):
            if self._running.get(client, 0) >= self.share:
                continue
            queue = self._queues[client]
            while queue:
                job = queue.popleft()
                if job.future.set_running_or_notify_cancel():  # False: its caller gave up while it waited
                    if queue:
                        self._queues.move_to_end(client)        # the next turn is somebody else's
                    else:
                        del self._queues[client]
                    return job
            del self._queues[client]
        return None

    def _dispatch(self) -> None:
        for w in [w for w in self._procs if w.ready and w.job is None]:
            job = self._next_job()
            if job is None:
                return
            try:
                w.conn.send((job.fn, job.args))
            except Exception as exc:  # noqa: BLE001 - a dead worker, or arguments that cannot be pickled
                self._retire(w, kill=True)
                _fail(job, exc if not isinstance(exc, OSError) else
                      WorkerUnavailable("a worker stopped; try again"))
                continue
            w.job = job
            job.deadline = time.monotonic() + job.timeout
            self._running[job.client] = self._running.get(job.client, 0) + 1
            self.dispatched.append(job.client)
            del self.dispatched[:-1000]

    def _fail_waiting(self, message: str) -> None:
        for queue in self._queues.values():
            for job in queue:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(WorkerUnavailable(message))
        self._queues.clear()


def _fail(job: _Job, exc: BaseException) -> None:
    if job.future.done():
        return
    if not job.future.running() and not job.future.set_running_or_notify_cancel():
        return
    job.future.set_exception(exc)


def _close_quietly(thing) -> None:
    try:
        thing.close()
    except OSError:
        pass


_shared: WorkerPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process-wide pool (API and UI handlers of one server share it). A pool closed by an
    app's shutdown is replaced on the next use, so a later app in the same process (tests, an
    embedding program) gets a working pool, not "shutting down"."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = WorkerPool()
        return _shared


def _close_shared() -> None:
    if _shared is not None:
        _shared.close()


atexit.register(_close_shared)


def configure(workers: int, timeout_s: float) -> WorkerPool:
    """Replace the shared pool's size and time limit (the server calls this at start-up)."""
    global _shared
    with _shared_lock:   # as `shared_pool`: a handler asking for the pool meanwhile gets the new one
        old, _shared = _shared, WorkerPool(workers, timeout_s)
        pool = _shared
    if old is not None:
        old.close()      # outside the lock: closing waits for the old pool's workers
    return pool


# ---------------------------------------------------------------- the worker process and test jobs
def spin(seconds: float) -> None:
    """Busy-loop for `seconds` of CPU (tests: a job that must be stopped by the time limit)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def nap(seconds: float) -> float:
    """Sleep `seconds` (tests: a job that takes wall time without competing for the CPU)."""
    time.sleep(seconds)
    return seconds


def _worker_main(fd: int, parent_pid: int) -> None:
    # lazy: models.procs loads httpx (an optional extra) that the server process, which imports this module, never needs
    from models.procs import die_with_parent

    die_with_parent(signal.SIGKILL, parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the server; it stops us
    conn = Connection(fd)
    warm()   # before "ready": no job's clock counts the start
    conn.send(("ready", None))
    while True:
        try:
            fn, args = conn.recv()   # our own jobs, pickled by the server (never a client's bytes)
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - the caller gets it unchanged
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - a result or exception that cannot be pickled
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]), int(sys.argv[2]))
