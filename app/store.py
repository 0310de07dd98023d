"""The episode store: SQLite (stdlib `sqlite3`, the embedded default: one file under the data
directory) or PostgreSQL (psycopg 3, for several app replicas and evaluators on one database).

Owns the schema, its migrations (applied in order on open, one migrating process at a time), and
every read and write of episodes, steps and evaluation runs. Durability rule: `add_step` commits
before it returns, and the runner reports a step only after `add_step` returned — so a crash loses
nothing that was shown. One connection per store guarded by a lock (writes are tiny and fast);
SQLite runs in WAL mode with `synchronous=FULL`, PostgreSQL with its default synchronous commit.

Tables (identical on both backends; SQLite `REAL` is PostgreSQL `DOUBLE PRECISION`):
- `episodes`  — one participant playing one instance: unguessable `id`, `group_id` (participants
  paired on the same instance share it), task, instance JSON and key, participant (model name or
  `human`), kind, settings JSON, status (`running`, `finished`, `error`, `interrupted`), success,
  exact_success, n_steps, episode_return, last outcome, error, evaluation links (run, split, index),
  timestamps, and `owner`: the store (process) that plays it.
- `steps`     — (episode_id, call): prompt messages JSON, raw output, parsed JSON, reward,
  feedback, outcome (failure taxonomy, see `game.tasks`), graded / terminated / truncated,
  exact_correct, float_rejected, timing JSON, state JSON (where the task's world stands after the
  call, `game.tasks.StepResult.state`; `{}` for steps stored before it existed).
- `eval_runs` — one batch evaluation: config JSON, status, progress counters, summary JSON.
The schema version is SQLite's `PRAGMA user_version`, or the one row of PostgreSQL's
`sftvsrl_schema`.

One server per SQLite file (`claim_single_server()`, called by the app before recovery): a server
holds an exclusive lock on `<file>.server-lock` for as long as it lives (the kernel drops it when the
process dies, `kill -9` included); a second server on the same file refuses to start and says why —
replicas are what PostgreSQL is for. CLI commands (evaluations, listings) may share the file.
SQLite files (the database, its WAL and shared-memory files) are created 0600.

Recovery (`mark_interrupted()` at app start-up): episodes left `running` by a process that is gone
become `interrupted`. On SQLite (one server) that is every running episode. On PostgreSQL each
store holds a session advisory lock named by its `owner` key for as long as its connection lives,
so a starting replica interrupts only episodes whose owner's lock is free — never a live replica's.

`DATABASE_URL` accepts `sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite:///:memory:` and
`postgresql://user:password@host:port/dbname` (also `postgres://`, and libpq query parameters such
as `?host=/run/postgresql` for a unix socket).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
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
    # 3: which store (process) plays a running episode, so replicas recover only dead owners' episodes
    """
    ALTER TABLE episodes ADD COLUMN owner TEXT;
    CREATE INDEX episodes_status ON episodes(status, owner);
    """,
    # 4: the task's state after each call (V-IRL: where the walker stands); older steps read as {}
    """
    ALTER TABLE steps ADD COLUMN state TEXT NOT NULL DEFAULT '{}';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
EPISODE_STATUSES = ("running", "finished", "error", "interrupted")
PG_LOCK_CLASS = 0x5F7  # first key of our PostgreSQL advisory locks (the second: owner key or 0 for migrations)


class StoreError(ValueError):
    """A bad store URL or a request for something that is not there."""


def new_id(nbytes: int = 16) -> str:
    """An unguessable URL-safe id (128 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise StoreError(f"unsupported DATABASE_URL {redact_url(url)!r}: use sqlite:///PATH or "
                         f"postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    path = url[len("sqlite:///"):]
    if not path:
        raise StoreError("DATABASE_URL has no path (use sqlite:///data/playground.db)")
    return path


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """The URL without its password (for logs and error messages)."""
    return re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:***@", url)


def pg_migration(sql: str) -> str:
    """A migration's SQLite text in PostgreSQL: REAL (8 bytes in SQLite) is DOUBLE PRECISION."""
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


def _private_file(path: Path, *, create: bool = True) -> None:
    """`path` readable by its owner only (0600), created empty when missing and `create`."""
    try:
        if create:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:  # not ours to change (a read-only or foreign file): SQLite will say what is wrong
        pass


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _bool(v) -> bool | None:
    return None if v is None else bool(v)


class Store:
    """Thread-safe access to one SQLite or PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = is_postgres(url)
        self.owner = str(secrets.randbits(31))  # this store's key for the episodes it plays
        self._lock = threading.RLock()
        if self.postgres:
            self._connect_pg()
        else:
            path = sqlite_path(url)
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _private_file(Path(path))   # SQLite gives its -wal and -shm files the database's mode
            self._conn: Any = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.row_factory = sqlite3.Row
            with self._lock:
                if path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
            if path != ":memory:":
                for extra in ("-wal", "-shm"):   # made 0644 by an older version: tighten them
                    _private_file(Path(path + extra), create=False)
        self._server_lock: int | None = None
        self.migrate()

    def claim_single_server(self) -> None:
        """Take this SQLite file for one server (no-op on PostgreSQL, whose advisory locks let
        replicas share a database): an exclusive lock on `<file>.server-lock`, held until `close()`
        or the process ends. A `StoreError` says why when another server holds it."""
        if self.postgres or self._server_lock is not None:
            return
        path = sqlite_path(self.url)
        if path == ":memory:":
            return
        import fcntl  # lazy: POSIX-only; only a SQLite file's server lock needs it

        lock_path = Path(path + ".server-lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise StoreError(f"another sftvsrl server ({holder}) is serving the SQLite store {path}: one server "
                             "per SQLite file (a second would interrupt the first one's live games). Stop it, "
                             "pick another --data-dir, or run replicas on PostgreSQL (DATABASE_URL)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._server_lock = fd

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def _connect_pg(self) -> None:
        try:  # lazy: psycopg is optional (the `postgres` extra); only a postgresql:// store needs it
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise StoreError("a postgresql:// DATABASE_URL needs psycopg 3: pip install 'psycopg[binary]' "
                             "(the 'postgres' extra)") from None
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=30)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.safe_url}: {str(exc).strip()}") from None
        # held for the life of this connection: our running episodes are not recovered by others
        self._conn.execute("SELECT pg_advisory_lock(%s, %s)", (PG_LOCK_CLASS, int(self.owner)))

    def _ensure_connected(self) -> None:
        """PostgreSQL: reconnect (and retake the owner lock) after the server dropped the connection."""
        if self.postgres and (self._conn.closed or self._conn.broken):
            self._connect_pg()

    def _text(self, value: str) -> str:
        """A model's raw text for a TEXT column: PostgreSQL cannot hold NUL (0x00) characters, so
        there they become U+FFFD (SQLite stores the text as is). JSON columns escape them anyway."""
        return value.replace("\x00", "\ufffd") if self.postgres else value

    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s") if self.postgres else sql

    @contextmanager
    def _tx(self):
        """One transaction, committed when the block ends (rolled back on an exception)."""
        with self._lock:
            self._ensure_connected()
            if self.postgres:
                with self._conn.transaction():
                    yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _x(self, sql: str, args: Iterable = ()):
        """Execute one statement on the connection (the caller holds the lock)."""
        return self._conn.execute(self._sql(sql), tuple(args))

    # ------------------------------------------------------------------ schema
    @property
    def version(self) -> int:
        with self._lock:
            self._ensure_connected()
            if not self.postgres:
                return int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            # a catalog query (an MVCC read), not to_regclass: that may answer from a stale cache
            if not self._x("SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE tablename = 'sftvsrl_schema' "
                           "AND schemaname = current_schema()").fetchone()["n"]:
                return 0
            row = self._x("SELECT version FROM sftvsrl_schema").fetchone()
            return int(row["version"]) if row else 0

    def migrate(self) -> int:
        """Apply the migrations this database has not seen yet; returns the new version."""
        if self.version == SCHEMA_VERSION:
            return SCHEMA_VERSION
        with self._tx():  # one migrating process at a time (SQLite: write lock; PostgreSQL: advisory lock)
            if self.postgres:
                self._x("SELECT pg_advisory_xact_lock(?, 0)", (PG_LOCK_CLASS,))
            current = self.version
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.safe_url}: schema version {current} is newer than this code "
                                 f"({SCHEMA_VERSION})")
            for version in range(current, SCHEMA_VERSION):
                sql = pg_migration(MIGRATIONS[version]) if self.postgres else MIGRATIONS[version]
                for statement in sql.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
            if current < SCHEMA_VERSION:
                if not self.postgres:
                    self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                else:
                    if current == 0:
                        self._x("CREATE TABLE sftvsrl_schema (version INTEGER NOT NULL)")
                        self._x("INSERT INTO sftvsrl_schema VALUES (0)")
                    self._x("UPDATE sftvsrl_schema SET version = ?", (SCHEMA_VERSION,))
            return SCHEMA_VERSION

    def close(self) -> None:
        lock = getattr(self, "_server_lock", None)
        if lock is not None:
            os.close(lock)   # releases the server lock
            self._server_lock = None
        with self._lock:
            if self.postgres and not (self._conn.closed or self._conn.broken):
                try:  # release the owner lock now (the server would, but only once it saw us go)
                    self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PG_LOCK_CLASS, int(self.owner)))
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
            self._conn.close()

    def _exec(self, sql: str, args: Iterable = ()) -> int:
        """Run one write statement (autocommit); returns the number of rows changed."""
        with self._lock:
            self._ensure_connected()
            return self._x(sql, args).rowcount

    def _rows(self, sql: str, args: Iterable = ()) -> list:
        """Run a query and fetch every row while holding the lock (API threads share the connection).
        A read that finds the PostgreSQL connection dropped (e.g. a server restart) reconnects and
        runs once more; writes never retry (the caller sees the error, nothing is written twice)."""
        with self._lock:
            self._ensure_connected()
            try:
                return self._x(sql, args).fetchall()
            except Exception:
                if not (self.postgres and self._conn.broken):
                    raise
            self._connect_pg()
            return self._x(sql, args).fetchall()

    def _row(self, sql: str, args: Iterable = ()):
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
            "settings, status, created_at, eval_run_id, eval_split, eval_index, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            (episode_id, group_id, task, instance_key, _json(instance), participant, participant_kind,
             _json(settings or {}), time.time(), eval_run_id, eval_split, eval_index, self.owner))
        return episode_id

    def add_step(self, episode_id: str, step: dict) -> None:
        """Insert one finished step and update the episode's counters, in one committed transaction."""
        with self._tx():
            self._x(
                "INSERT INTO steps (episode_id, call, prompt, output, parsed, reward, feedback, outcome, graded, "
                "terminated, truncated, exact_correct, float_rejected, timing, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (episode_id, step["call"], _json(step.get("prompt", [])), self._text(step["output"]),
                 _json(step.get("parsed", {})), step["reward"], self._text(step["feedback"]), step["outcome"],
                 int(step["graded"]), int(step["terminated"]), int(step["truncated"]),
                 None if step.get("exact_correct") is None else int(step["exact_correct"]),
                 None if step.get("float_rejected") is None else int(step["float_rejected"]),
                 _json(step.get("timing", {})), _json(step.get("state") or {}), time.time()))
            self._x("UPDATE episodes SET n_steps = n_steps + 1, episode_return = episode_return + ?, outcome = ? "
                    "WHERE id = ?", (step["reward"], step["outcome"], episode_id))

    def finish_episode(self, episode_id: str, *, status: str, success: bool | None = None,
                       exact_success: bool | None = None, error: str | None = None) -> None:
        if status not in EPISODE_STATUSES:
            raise StoreError(f"unknown status {status!r}")
        self._exec("UPDATE episodes SET status = ?, success = ?, exact_success = ?, error = ?, finished_at = ? "
                   "WHERE id = ?",
                   (status, None if success is None else int(success),
                    None if exact_success is None else int(exact_success), error, time.time(), episode_id))

    def mark_interrupted(self, episode_ids: Iterable[str] | None = None) -> int:
        """Episodes still `running` become `interrupted` (with a `finished_at`): the given ones, or
        (None, at start-up after a crash) every one whose owner is gone — on SQLite all of them, on
        PostgreSQL those whose owner no longer holds its advisory lock (another live replica's
        episodes are left alone)."""
        # Interruption is an end: it gets a finished_at (a number we made, never user input).
        stop = f"status = 'interrupted', finished_at = COALESCE(finished_at, {time.time():.6f})"
        if episode_ids is None:
            if not self.postgres:
                return self._exec(f"UPDATE episodes SET {stop} WHERE status = 'running'")
            with self._tx():  # try each owner's lock: taking it means its connection is gone
                owners = [r["owner"] for r in self._x("SELECT DISTINCT owner FROM episodes WHERE status = 'running' "
                                                      "AND owner IS NOT NULL").fetchall()]
                dead = [o for o in owners if o != self.owner and (not o.isdigit() or self._x(
                    "SELECT pg_try_advisory_xact_lock(?, ?) AS free", (PG_LOCK_CLASS, int(o))).fetchone()["free"])]
                n = self._x(f"UPDATE episodes SET {stop} WHERE status = 'running' AND owner IS NULL"
                            ).rowcount
                if dead:
                    n += self._x(f"UPDATE episodes SET {stop} WHERE status = 'running' AND owner IN "
                                 f"({','.join('?' * len(dead))})", dead).rowcount
                return n
        ids = list(episode_ids)
        if not ids:
            return 0
        return self._exec(f"UPDATE episodes SET {stop} WHERE status = 'running' AND id IN "
                          f"({','.join('?' * len(ids))})", ids)

    def reopen_episode(self, episode_id: str) -> None:
        self._exec("UPDATE episodes SET status = 'running', error = NULL, finished_at = NULL, owner = ? WHERE id = ?",
                   (self.owner, episode_id))

    def _episode_row(self, row) -> dict:
        d = dict(row)
        d["instance"] = json.loads(d["instance"])
        d["settings"] = json.loads(d["settings"])
        d["success"] = _bool(d["success"])
        d["exact_success"] = _bool(d["exact_success"])
        return d

    def _step_row(self, row) -> dict:
        d = dict(row)
        for key in ("prompt", "parsed", "timing", "state"):
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
                      instance_key: str | None = None, limit: int = 100, offset: int = 0,
                      visible_groups: Iterable[str] | None = None) -> list[dict]:
        """Filtered episodes, oldest first. `visible_groups` (when given) restricts the result to
        evaluation episodes and these groups (a caller's own games, `app.access`)."""
        where: list[str] = []
        args: list[Any] = []
        if visible_groups is not None:
            groups = sorted(set(visible_groups))[:256]
            where.append("(eval_run_id IS NOT NULL" + (f" OR group_id IN ({','.join('?' * len(groups))})"
                                                       if groups else "") + ")")
            args.extend(groups)
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

    def move_run_episodes(self, from_run_ids: Iterable[str], to_run_id: str) -> int:
        """Move every episode of the runs `from_run_ids` into run `to_run_id`, and mark those runs
        `merged` (summary `{"merged_into": to_run_id}`), in one transaction; returns the episodes moved."""
        ids = list(from_run_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._tx():
            n = self._x(f"UPDATE episodes SET eval_run_id = ? WHERE eval_run_id IN ({marks})",
                        [to_run_id, *ids]).rowcount
            self._x(f"UPDATE eval_runs SET status = 'merged', summary = ?, updated_at = ? WHERE id IN ({marks})",
                    [_json({"merged_into": to_run_id}), time.time(), *ids])
        return n

    def _run_row(self, row) -> dict:
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

    def import_run(self, run: dict, episodes: list[dict]) -> bool:
        """Write a finished run and its finished episodes with their steps, all in one transaction,
        unless a run with `run["id"]` is already stored (then nothing is written: importing twice,
        or from two replicas at once, stores each episode once). Returns whether it wrote.

        `run`: id, task, config, config_key, summary. Each episode: id, group_id, task, instance,
        instance_key, participant, participant_kind, settings, success, exact_success, eval_split,
        eval_index and `steps` (step records as `add_step` takes them)."""
        now = time.time()
        with self._tx():
            written = self._x(
                "INSERT INTO eval_runs (id, task, config, config_key, status, total, done, summary, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, 'finished', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (run["id"], run["task"], _json(run["config"]), run["config_key"], len(episodes), len(episodes),
                 _json(run.get("summary")), now, now)).rowcount
            if not written:
                return False
            ep_rows, step_rows = [], []
            for ep in episodes:
                steps = ep.get("steps") or []
                ep_rows.append((ep["id"], ep["group_id"], ep["task"], ep["instance_key"], _json(ep["instance"]),
                                ep["participant"], ep.get("participant_kind", "model"), _json(ep.get("settings") or {}),
                                "finished", None if ep.get("success") is None else int(ep["success"]),
                                None if ep.get("exact_success") is None else int(ep["exact_success"]),
                                len(steps), float(sum(s["reward"] for s in steps)),
                                steps[-1]["outcome"] if steps else None, now, now, run["id"], ep.get("eval_split"),
                                ep.get("eval_index")))
                for s in steps:
                    step_rows.append((ep["id"], s["call"], _json(s.get("prompt", [])), self._text(s["output"]),
                                      _json(s.get("parsed", {})), s["reward"], self._text(s["feedback"]),
                                      s["outcome"],
                                      int(s["graded"]), int(s["terminated"]), int(s["truncated"]),
                                      None if s.get("exact_correct") is None else int(s["exact_correct"]),
                                      None if s.get("float_rejected") is None else int(s["float_rejected"]),
                                      _json(s.get("timing", {})), _json(s.get("state") or {}), now))
            self._xmany("INSERT INTO episodes (id, group_id, task, instance_key, instance, participant, "
                        "participant_kind, settings, status, success, exact_success, n_steps, episode_return, "
                        "outcome, created_at, finished_at, eval_run_id, eval_split, eval_index) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ep_rows)
            self._xmany("INSERT INTO steps (episode_id, call, prompt, output, parsed, reward, feedback, outcome, "
                        "graded, terminated, truncated, exact_correct, float_rejected, timing, state, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", step_rows)
        return True

    def _xmany(self, sql: str, rows: list) -> None:
        """Execute one statement for many rows (the caller holds the lock, inside `_tx`)."""
        if not rows:
            return
        if self.postgres:
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self._conn.executemany(sql, rows)

    def run_episodes(self, run_id: str) -> list[dict]:
        rows = self._rows("SELECT * FROM episodes WHERE eval_run_id = ? ORDER BY eval_split, eval_index, participant, "
                          "created_at", (run_id,))
        return [self._episode_row(r) for r in rows]
