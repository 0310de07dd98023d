"""The episode store: SQLite (stdlib `sqlite3`), one file under the data directory by default.

Owns the schema, its migrations (`PRAGMA user_version`, applied in order on open), and every read
and write of episodes, steps and evaluation runs. Durability rule: `add_step` commits before it
returns, and the runner reports a step only after `add_step` returned — so a crash loses nothing
that was shown. WAL journal; one connection guarded by a lock (writes are tiny and fast).

Tables:
- `episodes`  — one participant playing one instance: unguessable `id`, `group_id` (participants
  paired on the same instance share it), task, instance JSON and key, participant (model name or
  `human`), kind, settings JSON, status (`running`, `finished`, `error`, `interrupted`), success,
  exact_success, n_steps, episode_return, last outcome, error, evaluation links (run, split, index),
  timestamps.
- `steps`     — (episode_id, call): prompt messages JSON, raw output, parsed JSON, reward,
  feedback, outcome (failure taxonomy, see `app.tasks`), graded / terminated / truncated,
  exact_correct, float_rejected, timing JSON.
- `eval_runs` — one batch evaluation: config JSON, status, progress counters, summary JSON.

`DATABASE_URL` accepts `sqlite:///relative.db`, `sqlite:////absolute.db` and `sqlite:///:memory:`.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

MIGRATIONS: list[str] = [
    # 1: episodes and steps
    """
    CREATE TABLE episodes (
        id TEXT PRIMARY KEY,
        group_id TEXT NOT NULL,
        task TEXT NOT NULL,
        instance_key TEXT NOT NULL,
        instance TEXT NOT NULL,
        participant TEXT NOT NULL,
        participant_kind TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,
        success INTEGER,
        exact_success INTEGER,
        n_steps INTEGER NOT NULL DEFAULT 0,
        episode_return REAL NOT NULL DEFAULT 0,
        outcome TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX episodes_group ON episodes(group_id);
    CREATE INDEX episodes_task ON episodes(task, participant);
    CREATE TABLE steps (
        episode_id TEXT NOT NULL REFERENCES episodes(id),
        call INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL,
        parsed TEXT NOT NULL,
        reward REAL NOT NULL,
        feedback TEXT NOT NULL,
        outcome TEXT NOT NULL,
        graded INTEGER NOT NULL,
        terminated INTEGER NOT NULL,
        truncated INTEGER NOT NULL,
        exact_correct INTEGER,
        float_rejected INTEGER,
        timing TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        PRIMARY KEY (episode_id, call)
    );
    """,
    # 2: evaluation runs, and the links from episodes to them
    """
    CREATE TABLE eval_runs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        config TEXT NOT NULL,
        config_key TEXT NOT NULL,
        status TEXT NOT NULL,
        total INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        summary TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    ALTER TABLE episodes ADD COLUMN eval_run_id TEXT;
    ALTER TABLE episodes ADD COLUMN eval_split TEXT;
    ALTER TABLE episodes ADD COLUMN eval_index INTEGER;
    CREATE INDEX episodes_eval ON episodes(eval_run_id, eval_split, eval_index);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
EPISODE_STATUSES = ("running", "finished", "error", "interrupted")


class StoreError(ValueError):
    """A bad store URL or a request for something that is not there."""


def new_id(nbytes: int = 16) -> str:
    """An unguessable URL-safe id (128 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise StoreError(f"unsupported DATABASE_URL {url!r}: only sqlite:///PATH is supported")
    path = url[len("sqlite:///"):]
    if not path:
        raise StoreError("DATABASE_URL has no path (use sqlite:///data/playground.db)")
    return path


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _bool(v) -> bool | None:
    return None if v is None else bool(v)


class Store:
    """Thread-safe access to one SQLite database."""

    def __init__(self, url: str) -> None:
        self.url = url
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.migrate()

    # ------------------------------------------------------------------ schema
    @property
    def version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> int:
        """Apply the migrations this database has not seen yet; returns the new version."""
        with self._lock:
            while True:
                current = self.version
                if current > SCHEMA_VERSION:
                    raise StoreError(f"{self.url}: schema version {current} is newer than this code "
                                     f"({SCHEMA_VERSION})")
                if current == SCHEMA_VERSION:
                    return current
                self._conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time
                try:
                    if self.version == current:  # nobody migrated meanwhile
                        for statement in MIGRATIONS[current].split(";"):
                            if statement.strip():
                                self._conn.execute(statement)
                        self._conn.execute(f"PRAGMA user_version={current + 1}")
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _exec(self, sql: str, args: Iterable = ()) -> int:
        """Run one write statement (autocommit); returns the number of rows changed."""
        with self._lock:
            return self._conn.execute(sql, tuple(args)).rowcount

    def _rows(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        """Run a query and fetch every row while holding the lock (API threads share the connection)."""
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    def _row(self, sql: str, args: Iterable = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ episodes
    def create_episode(self, *, group_id: str, task: str, instance: dict, instance_key: str, participant: str,
                       participant_kind: str, settings: dict | None = None, episode_id: str | None = None,
                       eval_run_id: str | None = None, eval_split: str | None = None,
                       eval_index: int | None = None) -> str:
        episode_id = episode_id or new_id()
        self._exec(
            "INSERT INTO episodes (id, group_id, task, instance_key, instance, participant, participant_kind, "
            "settings, status, created_at, eval_run_id, eval_split, eval_index) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (episode_id, group_id, task, instance_key, _json(instance), participant, participant_kind,
             _json(settings or {}), time.time(), eval_run_id, eval_split, eval_index))
        return episode_id

    def add_step(self, episode_id: str, step: dict) -> None:
        """Insert one finished step and update the episode's counters, in one committed transaction."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO steps (episode_id, call, prompt, output, parsed, reward, feedback, outcome, graded, "
                    "terminated, truncated, exact_correct, float_rejected, timing, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (episode_id, step["call"], _json(step.get("prompt", [])), step["output"],
                     _json(step.get("parsed", {})), step["reward"], step["feedback"], step["outcome"],
                     int(step["graded"]), int(step["terminated"]), int(step["truncated"]),
                     None if step.get("exact_correct") is None else int(step["exact_correct"]),
                     None if step.get("float_rejected") is None else int(step["float_rejected"]),
                     _json(step.get("timing", {})), time.time()))
                self._conn.execute(
                    "UPDATE episodes SET n_steps = n_steps + 1, episode_return = episode_return + ?, outcome = ? "
                    "WHERE id = ?", (step["reward"], step["outcome"], episode_id))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def finish_episode(self, episode_id: str, *, status: str, success: bool | None = None,
                       exact_success: bool | None = None, error: str | None = None) -> None:
        if status not in EPISODE_STATUSES:
            raise StoreError(f"unknown status {status!r}")
        self._exec("UPDATE episodes SET status = ?, success = ?, exact_success = ?, error = ?, finished_at = ? "
                   "WHERE id = ?",
                   (status, None if success is None else int(success),
                    None if exact_success is None else int(exact_success), error, time.time(), episode_id))

    def mark_interrupted(self, episode_ids: Iterable[str] | None = None) -> int:
        """Episodes still `running` (all of them, e.g. at start-up after a crash) become `interrupted`."""
        if episode_ids is None:
            return self._exec("UPDATE episodes SET status = 'interrupted' WHERE status = 'running'")
        else:
            ids = list(episode_ids)
            if not ids:
                return 0
            return self._exec(f"UPDATE episodes SET status = 'interrupted' WHERE status = 'running' AND id IN "
                              f"({','.join('?' * len(ids))})", ids)

    def reopen_episode(self, episode_id: str) -> None:
        self._exec("UPDATE episodes SET status = 'running', error = NULL, finished_at = NULL WHERE id = ?",
                   (episode_id,))

    def _episode_row(self, row: sqlite3.Row) -> dict:
        d = dict(row)
        d["instance"] = json.loads(d["instance"])
        d["settings"] = json.loads(d["settings"])
        d["success"] = _bool(d["success"])
        d["exact_success"] = _bool(d["exact_success"])
        return d

    def _step_row(self, row: sqlite3.Row) -> dict:
        d = dict(row)
        for key in ("prompt", "parsed", "timing"):
            d[key] = json.loads(d[key])
        for key in ("graded", "terminated", "truncated", "exact_correct", "float_rejected"):
            d[key] = _bool(d[key])
        return d

    def get_episode(self, episode_id: str, *, steps: bool = True, prompts: bool = True) -> dict | None:
        row = self._row("SELECT * FROM episodes WHERE id = ?", (episode_id,))
        if row is None:
            return None
        ep = self._episode_row(row)
        if steps:
            ep["steps"] = self.steps(episode_id, prompts=prompts)
        return ep

    def steps(self, episode_id: str, *, prompts: bool = True) -> list[dict]:
        rows = self._rows("SELECT * FROM steps WHERE episode_id = ? ORDER BY call", (episode_id,))
        out = [self._step_row(r) for r in rows]
        if not prompts:
            for s in out:
                s.pop("prompt", None)
        return out

    def list_episodes(self, *, task: str | None = None, participant: str | None = None, status: str | None = None,
                      success: bool | None = None, outcome: str | None = None, group_id: str | None = None,
                      eval_run_id: str | None = None, eval_split: str | None = None,
                      instance_key: str | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
        where, args = [], []
        for col, val in (("task", task), ("participant", participant), ("status", status), ("outcome", outcome),
                         ("group_id", group_id), ("eval_run_id", eval_run_id), ("eval_split", eval_split),
                         ("instance_key", instance_key)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if success is not None:
            where.append("success = ?")
            args.append(int(success))
        sql = "SELECT * FROM episodes" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at, eval_index, participant LIMIT ? OFFSET ?"
        return [self._episode_row(r) for r in self._rows(sql, [*args, int(limit), int(offset)])]

    def iter_episodes(self, batch: int = 500, **filters) -> Iterator[dict]:
        offset = 0
        while True:
            rows = self.list_episodes(limit=batch, offset=offset, **filters)
            yield from rows
            if len(rows) < batch:
                return
            offset += batch

    def count_episodes(self, **filters) -> int:
        return sum(1 for _ in self.iter_episodes(**filters))

    # ------------------------------------------------------------------ evaluation runs
    def create_run(self, *, task: str, config: dict, config_key: str, total: int, run_id: str | None = None) -> str:
        run_id = run_id or "run-" + secrets.token_hex(6)
        now = time.time()
        self._exec("INSERT INTO eval_runs (id, task, config, config_key, status, total, created_at, updated_at) "
                   "VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                   (run_id, task, _json(config), config_key, total, now, now))
        return run_id

    def update_run(self, run_id: str, **fields) -> None:
        allowed = {"status", "done", "total", "summary", "error"}
        bad = set(fields) - allowed
        if bad:
            raise StoreError(f"unknown run field(s) {sorted(bad)}")
        if "summary" in fields and fields["summary"] is not None:
            fields["summary"] = _json(fields["summary"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE eval_runs SET {cols}, updated_at = ? WHERE id = ?", [*fields.values(), time.time(), run_id])

    def _run_row(self, row: sqlite3.Row) -> dict:
        d = dict(row)
        d["config"] = json.loads(d["config"])
        d["summary"] = json.loads(d["summary"]) if d["summary"] else None
        return d

    def get_run(self, run_id: str) -> dict | None:
        row = self._row("SELECT * FROM eval_runs WHERE id = ?", (run_id,))
        return self._run_row(row) if row else None

    def list_runs(self, *, config_key: str | None = None, limit: int = 100) -> list[dict]:
        if config_key:
            rows = self._rows("SELECT * FROM eval_runs WHERE config_key = ? ORDER BY created_at DESC LIMIT ?",
                              (config_key, limit))
        else:
            rows = self._rows("SELECT * FROM eval_runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [self._run_row(r) for r in rows]

    def run_episodes(self, run_id: str) -> list[dict]:
        rows = self._rows("SELECT * FROM episodes WHERE eval_run_id = ? ORDER BY eval_split, eval_index, participant, "
                          "created_at", (run_id,))
        return [self._episode_row(r) for r in rows]
