"""App settings: the data directory, the episode-store URL, the model config and request limits.

Read once from the environment (`from_env`) and passed explicitly to `create_app`, the CLI and the
evaluation; nothing else reads these variables:
- `SFTVSRL_DATA_DIR` (default `./data`): the SQLite file, evaluation outputs and bundles live here;
- `DATABASE_URL` (default `sqlite:///<data dir>/playground.db`): `sqlite:///PATH` or
  `postgresql://USER:PASSWORD@HOST:PORT/DBNAME` (see `app.store`);
- `SFTVSRL_MODELS_CONFIG`: the models file (see `models.config`);
- `SFTVSRL_MAX_BODY_BYTES` (default 65536): the largest request body the API accepts;
- `SFTVSRL_MODEL_CONCURRENCY` (default 4): concurrent requests per model (API episodes and eval).
- `SFTVSRL_FINDINGS_DIR` (default `models/checkpoints/findings`): the shipped pipeline evaluation the
  Findings tab shows (`<task>/findings.json`, `<task>/episodes.jsonl.gz`; see `app.findings`).
Public-demo rules (`app.access`):
- `SFTVSRL_PUBLIC` (`1`/`0`, default 0; `serve --public`): operator token needed for evaluations
  and bulk export, no public gallery unless asked for;
- `SFTVSRL_ADMIN_TOKEN`: the operator token; `SFTVSRL_SECRET`: signs game tokens;
- `SFTVSRL_GALLERY` (`1`/`0`; default: on locally, off with `--public`): list every game;
- `SFTVSRL_MAX_GAMES_PER_CLIENT` (8), `SFTVSRL_MAX_LIVE_GAMES` (64): live-game caps;
- `SFTVSRL_HUMAN_IDLE_S` (300): a human game with no move for this long ends;
- `SFTVSRL_UNWATCHED_S` (60): a model-only game nobody watches for this long is cancelled;
- `SFTVSRL_VIRL_DIRS`: extra V-IRL route directories clients may name (`os.pathsep`-separated);
- `SFTVSRL_CPU_WORKERS` (2), `SFTVSRL_CPU_TIMEOUT_S` (10): the worker pool for CPU-bound work;
- `SFTVSRL_MAX_HEADER_BYTES` (16384): the largest request head (431 beyond);
- `SFTVSRL_HEADER_TIMEOUT_S` (10): a request head must arrive within this (the connection is closed);
- `SFTVSRL_KEEP_ALIVE_S` (5): an idle keep-alive connection is closed after this;
- `SFTVSRL_MAX_CONNECTIONS` (512): open connections at once (beyond, requests get 503);
- `SFTVSRL_WARM_MODELS` (`1`/`0`; default: on for `sftvsrl serve`, off otherwise): load the default
  models' checkpoints, and have each answer once, as the server starts (`ModelPool.warm`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str | None = None
    models_config: str | None = None
    max_body_bytes: int = 64 * 1024
    model_concurrency: int = 4
    virl_source: str = "bundled:helsinki"
    virl_dirs: tuple[str, ...] = ()
    public: bool = False
    admin_token: str | None = None
    gallery: bool | None = None          # None: on unless public
    max_games_per_client: int = 8
    max_live_games: int = 64
    human_idle_s: float = 300.0
    unwatched_s: float = 60.0
    cpu_workers: int = 2
    cpu_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    findings_dir: Path | None = None
    warm_models: bool | None = None      # None: on for `sftvsrl serve`, off for other apps (tests, CLI)

    @property
    def show_gallery(self) -> bool:
        return (not self.public) if self.gallery is None else self.gallery

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'playground.db').as_posix()}"

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("SFTVSRL_DATA_DIR"):
            values["data_dir"] = Path(env["SFTVSRL_DATA_DIR"])
        if env.get("DATABASE_URL"):
            values["database_url"] = env["DATABASE_URL"]
        if env.get("SFTVSRL_FINDINGS_DIR"):
            values["findings_dir"] = Path(env["SFTVSRL_FINDINGS_DIR"])
        if env.get("SFTVSRL_MODELS_CONFIG"):
            values["models_config"] = env["SFTVSRL_MODELS_CONFIG"]
        for key, name, kind in (("max_body_bytes", "SFTVSRL_MAX_BODY_BYTES", int),
                                ("model_concurrency", "SFTVSRL_MODEL_CONCURRENCY", int),
                                ("max_games_per_client", "SFTVSRL_MAX_GAMES_PER_CLIENT", int),
                                ("max_live_games", "SFTVSRL_MAX_LIVE_GAMES", int),
                                ("human_idle_s", "SFTVSRL_HUMAN_IDLE_S", float),
                                ("unwatched_s", "SFTVSRL_UNWATCHED_S", float),
                                ("cpu_workers", "SFTVSRL_CPU_WORKERS", int),
                                ("cpu_timeout_s", "SFTVSRL_CPU_TIMEOUT_S", float),
                                ("max_header_bytes", "SFTVSRL_MAX_HEADER_BYTES", int),
                                ("header_timeout_s", "SFTVSRL_HEADER_TIMEOUT_S", float),
                                ("keep_alive_s", "SFTVSRL_KEEP_ALIVE_S", float),
                                ("max_connections", "SFTVSRL_MAX_CONNECTIONS", int)):
            if env.get(name):
                try:
                    values[key] = kind(env[name])
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {env[name]!r}") from None
                if not values[key] >= 0 or values[key] == float("inf"):
                    raise ValueError(f"{name} must be a finite number >= 0, got {env[name]!r}")
        for key, name in (("public", "SFTVSRL_PUBLIC"), ("gallery", "SFTVSRL_GALLERY"),
                          ("warm_models", "SFTVSRL_WARM_MODELS")):
            if env.get(name):
                flag = env[name].strip().lower()
                if flag not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"{name} must be 1 or 0, got {env[name]!r}")
                values[key] = flag in ("1", "true", "yes", "on")
        if env.get("SFTVSRL_ADMIN_TOKEN"):
            values["admin_token"] = env["SFTVSRL_ADMIN_TOKEN"]
        if env.get("SFTVSRL_VIRL_DIRS"):
            values["virl_dirs"] = tuple(d for d in env["SFTVSRL_VIRL_DIRS"].split(os.pathsep) if d)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(**values)
