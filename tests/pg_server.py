"""A real, throw-away PostgreSQL server for the tests: Debian's `postgresql` binaries
(/usr/lib/postgresql/*/bin, or $SFTVSRL_PG_BIN), `initdb` into a fresh temporary directory, started
with `pg_ctl -w` (returns once the server accepts connections) on a unix socket in that directory
only (no TCP port to collide with), stopped and deleted at the end. PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` user (else `nobody`).

`make test` installs the `postgresql` package when it is missing and it can (root + apt); without
it the PostgreSQL tests skip and say why.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

ROLE = "sftvsrl"


def find_bindir() -> Path | None:
    env = os.environ.get("SFTVSRL_PG_BIN")
    def version(p: str) -> int:
        name = Path(p).parent.name
        return int(name) if name.isdigit() else 0

    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for c in candidates:
        if c and (Path(c) / "postgres").exists() and (Path(c) / "initdb").exists():
            return Path(c)
    return None


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="sftvsrl-pg-"))
        self.data = self.dir / "data"
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                    self.user = name
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL")
            shutil.chown(self.dir, user=self.user)
        os.chmod(self.dir, 0o700)
        self.running = False
        self._n = 0

    def _run(self, *args: str) -> None:
        proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], user=self.user, cwd=self.dir,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")

    def _opts(self) -> str:
        return f"-c listen_addresses='' -c unix_socket_directories='{self.dir}' -c max_connections=50"

    def start(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "--encoding=UTF8", "--locale=C",
                  "--no-sync")
        self._run("pg_ctl", "start", "-w", "-t", "120", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", self._opts())
        self.running = True
        return self

    def restart(self) -> None:
        """Stop (waiting for every backend to exit, which drops all client connections) and start again."""
        self._run("pg_ctl", "restart", "-w", "-t", "120", "-m", "fast", "-D", str(self.data),
                  "-l", str(self.dir / "server.log"), "-o", self._opts())

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{ROLE}@/{dbname}?host={quote(str(self.dir), safe='')}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)
