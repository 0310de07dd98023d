"""App settings: the data directory, the episode-store URL, the model config and request limits.

Read once from the environment (`from_env`) and passed explicitly to `create_app`, the CLI and the
evaluation; nothing else reads these variables:
- `SFTVSRL_DATA_DIR` (default `./data`): the SQLite file, evaluation outputs and bundles live here;
- `DATABASE_URL` (default `sqlite:///<data dir>/playground.db`): `sqlite:///PATH` or
  `postgresql://USER:PASSWORD@HOST:PORT/DBNAME` (see `app.store`);
- `SFTVSRL_MODELS_CONFIG`: the models file (see `models.config`);
- `SFTVSRL_MAX_BODY_BYTES` (default 65536): the largest request body the API accepts;
- `SFTVSRL_MODEL_CONCURRENCY` (default 4): concurrent requests per model (API episodes and eval).
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
        if env.get("SFTVSRL_MODELS_CONFIG"):
            values["models_config"] = env["SFTVSRL_MODELS_CONFIG"]
        for key, name in (("max_body_bytes", "SFTVSRL_MAX_BODY_BYTES"),
                          ("model_concurrency", "SFTVSRL_MODEL_CONCURRENCY")):
            if env.get(name):
                try:
                    values[key] = int(env[name])
                except ValueError:
                    raise ValueError(f"{name} must be an integer, got {env[name]!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(**values)
