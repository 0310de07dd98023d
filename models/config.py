"""Model configuration: one `models.toml` naming the models (`sft`, `rl`, and any extras), with
environment-variable overrides for deployments.

File lookup: an explicit path, else `$SFTVSRL_MODELS_CONFIG`, else `./models.toml`, else the
packaged default (`models/default_models.toml`: `sft` and `rl` = the tiny in-repo GP-L and V-IRL-L
checkpoints in `models/checkpoints/`, `local` backend, one checkpoint per task; `sftvsrl vllm up`
writes a ./models.toml for the 11B pair). Format:

    [models.sft]
    backend = "openai"                 # "openai" (any OpenAI-compatible server) or "local"
    base_url = "http://127.0.0.1:8001/v1"
    served_name = "sft"                # the server's model id (default: the table name)
    tasks = ["gp-l", "gp-vl"]          # any of the registry's tasks (game.tasks.TASKS)
    label = "SFT"
    [models.sft.decoding]              # default: the paper's evaluation settings (max_tokens 256)
    max_tokens = 256

    [models.rl]
    backend = "local"
    path = "checkpoints/rl"            # Hugging Face checkpoint directory (relative to the file)

    [models.tiny]                      # a local model with one checkpoint per task
    backend = "local"
    tasks = ["gp-l", "virl-l"]         # default: the tasks named in `paths` (all tasks with `path`)
    [models.tiny.paths]                # task -> checkpoint; `path`, if also given, serves the rest
    gp-l = "checkpoints/gp-l-sft"
    virl-l = "checkpoints/virl-l-sft"

    [models.init]
    backend = "local"
    path = "checkpoints/gp-l-init"
    tasks = ["gp-l"]
    optional = true                    # left out (not an error) while its checkpoint is missing

A model with `paths` is still one model (one name, label, decoding and concurrency limit); the app
asks for it per task (`ModelSpec.make_backend(task)`, `ModelPool.player(name, task=…)`) and gets
the backend of that task's checkpoint, so a V-IRL episode runs the V-IRL checkpoint. Without a
task (health checks, `sftvsrl models test`) the `path`, else the first `paths` entry, is used.

An `optional` local model serves only the tasks whose checkpoint directory exists, and is left out
of the configuration when none does (`ModelsConfig.skipped` says why) rather than listed as broken:
the default file offers the pipelines' `init` and `sft-diverse` checkpoints this way, for whoever
has them.

Environment overrides, `SFTVSRL_MODEL_<NAME>_<FIELD>` (NAME upper-cased, `-` as `_`), e.g.
`SFTVSRL_MODEL_SFT_BASE_URL`, `SFTVSRL_MODEL_RL_PATH`, `SFTVSRL_MODEL_SFT_TASKS=gp-l,gp-vl`,
`SFTVSRL_MODEL_SFT_MAX_TOKENS`, `SFTVSRL_MODEL_SFT_TEMPERATURE`,
`SFTVSRL_MODEL_SFT_PATHS=gp-l=/ckpt/a,virl-l=/ckpt/b`. `…_PATH` names one checkpoint for every task
and drops the file's `paths`. Setting `…_BACKEND` (or `…_BASE_URL` / `…_PATH` / `…_PATHS`) for a
name not in the file adds that model. API keys are never stored in
the file: `api_key_env` names the variable that holds one.
"""
from __future__ import annotations

import asyncio
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .backends import Backend, make_backend
from .backends.base import Health
from .decoding import PAPER_EVAL, DecodingSettings, registry_tasks

ENV_CONFIG = "SFTVSRL_MODELS_CONFIG"
ENV_PREFIX = "SFTVSRL_MODEL_"
DEFAULT_FILE = Path(__file__).with_name("default_models.toml")
BACKENDS = ("openai", "local")
_DECODING_FIELDS = {f.name for f in fields(DecodingSettings)}
_INT_FIELDS = {"max_tokens", "min_tokens", "top_k", "seed", "retries"}
_FLOAT_FIELDS = {"temperature", "top_p", "connect_timeout_s", "read_timeout_s"}
_BOOL_FIELDS = {"optional"}


class ConfigError(ValueError):
    """An invalid model configuration (message names the file and the model)."""


@dataclass
class ModelSpec:
    """One configured model."""

    name: str
    backend: str = "openai"
    base_url: str | None = None
    served_name: str | None = None
    path: str | None = None
    paths: dict[str, str] = field(default_factory=dict)   # task -> checkpoint (local backend)
    tasks: tuple[str, ...] = field(default_factory=registry_tasks)   # default: every registered task
    label: str | None = None
    decoding: DecodingSettings = field(default_factory=lambda: PAPER_EVAL)
    api_key_env: str | None = None
    device: str | None = None
    image_format: str = "png"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    retries: int = 2
    optional: bool = False                # local: leave the model out while a checkpoint is missing

    @property
    def where(self) -> str:
        if self.backend == "openai":
            return self.base_url or "?"
        if self.paths:
            rest = [f"*: {self.path}"] if self.path else []
            return ", ".join([f"{t}: {p}" for t, p in self.paths.items()] + rest)
        return self.path or "?"

    def supports(self, task: str) -> bool:
        return task in self.tasks

    def missing_checkpoints(self) -> list[str]:
        """The local checkpoint directories (for its tasks) that do not exist."""
        if self.backend != "local":
            return []
        paths = dict.fromkeys(p for p in (self.path_for(t) for t in self.tasks) if p)
        return [p for p in paths if not Path(p).is_dir()]

    def path_for(self, task: str | None = None) -> str | None:
        """The checkpoint for `task` (local backend): its `paths` entry, else `path`; without a
        task, `path`, else the first `paths` entry."""
        if task is not None and task in self.paths:
            return self.paths[task]
        return self.path or next(iter(self.paths.values()), None)

    def make_backend(self, task: str | None = None) -> Backend:
        """A new backend for this model (for a local model with `paths`: the `task`'s checkpoint)."""
        if self.backend == "openai":
            return make_backend("openai", self.name, base_url=self.base_url, served_name=self.served_name,
                                api_key_env=self.api_key_env, settings=self.decoding,
                                connect_timeout_s=self.connect_timeout_s, read_timeout_s=self.read_timeout_s,
                                retries=self.retries, image_format=self.image_format)
        return make_backend("local", self.name, path=self.path_for(task), device=self.device, settings=self.decoding)

    def checkpoint_tasks(self) -> list[tuple[str | None, tuple[str, ...]]]:
        """Each distinct backend the model needs, as (a task that selects it, the tasks it serves):
        one entry (task None) unless a local model has per-task `paths`."""
        if not self.paths:
            return [(None, self.tasks)]
        groups: dict[str | None, list[str]] = {}
        for task in self.tasks:
            groups.setdefault(self.path_for(task), []).append(task)
        return [(tasks[0], tuple(tasks)) for tasks in groups.values()]

    async def health(self, backend_for: Callable[[str | None], Backend], timeout: float) -> Health:
        """Check every checkpoint this model serves (`backend_for(task)` gives the backend that
        plays `task`), each within `timeout` seconds; healthy only when all are. Never raises."""
        async def one(task: str | None) -> Health:
            try:
                return await asyncio.wait_for(backend_for(task).health(), timeout)
            except asyncio.TimeoutError:
                return Health(False, f"no answer within {timeout:g} s")
            except Exception as exc:  # noqa: BLE001 - health is reported, never raised
                return Health(False, str(exc) or type(exc).__name__)

        targets = self.checkpoint_tasks()
        results = await asyncio.gather(*(one(task) for task, _ in targets))
        if len(results) == 1:
            return results[0]
        detail = "; ".join(f"{','.join(tasks)}: {h.detail}" for (_, tasks), h in zip(targets, results))
        return Health(all(h.ok for h in results), detail, tuple(m for h in results for m in h.models))

    def to_toml_table(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend}
        for key in ("base_url", "served_name", "path", "label", "api_key_env", "device", "optional"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        data["tasks"] = list(self.tasks)
        if self.paths:
            data["paths"] = dict(self.paths)
        data["decoding"] = self.decoding.to_dict()
        return data


@dataclass
class ModelsConfig:
    models: dict[str, ModelSpec]
    source: str
    skipped: dict[str, str] = field(default_factory=dict)   # optional models left out: name -> why

    def __getitem__(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"no model named {name!r} in {self.source}; configured: {', '.join(self.models) or 'none'}") from None

    def for_task(self, task: str) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.supports(task)]


def _spec(name: str, table: Mapping[str, Any], base_dir: Path, source: str) -> ModelSpec:
    where = f"{source}: [models.{name}]"
    data = dict(table)
    backend = str(data.pop("backend", "openai"))
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: backend must be one of {BACKENDS}, got {backend!r}")
    decoding = PAPER_EVAL
    try:
        decoding = decoding.merged(data.pop("decoding", None) or {})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    paths = data.pop("paths", None) or {}
    if isinstance(paths, str):  # from SFTVSRL_MODEL_<NAME>_PATHS: "task=dir,task=dir"
        pairs = [item.split("=", 1) for item in paths.split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"{where}: paths must read task=dir,task=dir, got {paths!r}")
        paths = {t.strip(): d.strip() for t, d in pairs}
    if not isinstance(paths, Mapping) or not all(isinstance(v, str) and v for v in paths.values()):
        raise ConfigError(f"{where}: paths must be a table of task = \"checkpoint directory\"")
    registered = registry_tasks()
    bad = [t for t in paths if t not in registered]
    if bad:
        raise ConfigError(f"{where}: unknown task(s) {bad} in paths; use {', '.join(registered)}")
    if paths and backend != "local":
        raise ConfigError(f"{where}: paths (one checkpoint per task) is for the local backend")
    default_tasks = tuple(paths) if paths and not data.get("path") else registered
    tasks = data.pop("tasks", default_tasks)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in registered]
    if bad:
        raise ConfigError(f"{where}: unknown task(s) {bad}; use {', '.join(registered)}")
    known = {f.name for f in fields(ModelSpec)} - {"name", "backend", "decoding", "tasks", "paths"}
    unknown = set(data) - known
    if unknown:
        allowed = sorted(known | {"backend", "decoding", "tasks", "paths"})
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {allowed}")
    spec = ModelSpec(name=name, backend=backend, tasks=tuple(tasks), decoding=decoding, **data)
    if not isinstance(spec.optional, bool):
        raise ConfigError(f"{where}: optional must be true or false, got {spec.optional!r}")
    if backend == "openai" and not spec.base_url:
        raise ConfigError(f"{where}: an openai backend needs base_url")
    if backend == "local":
        if not spec.path and not paths:
            raise ConfigError(f"{where}: a local backend needs path (a checkpoint directory) or paths (one per task)")
        missing = [t for t in spec.tasks if not spec.path and t not in paths]
        if missing:
            raise ConfigError(f"{where}: no checkpoint for task(s) {missing}: add them to paths, or set path")

        def resolve(value: str) -> str:
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else (base_dir / p))

        spec.path = resolve(spec.path) if spec.path else None
        spec.paths = {t: resolve(d) for t, d in paths.items()}
    return spec


def _env_overrides(tables: dict[str, dict], env: Mapping[str, str]) -> None:
    """Apply `SFTVSRL_MODEL_<NAME>_<FIELD>` variables to the raw tables (in place)."""
    spec_fields = {f.name for f in fields(ModelSpec)} - {"name"}
    all_fields = sorted(spec_fields | _DECODING_FIELDS, key=len, reverse=True)
    names = {n.upper().replace("-", "_"): n for n in tables}
    creating = ("backend", "base_url", "path", "paths")
    keys = sorted((k for k in env if k.startswith(ENV_PREFIX)),
                  key=lambda k: (not any(k.endswith("_" + f.upper()) for f in creating), k))
    for key in keys:  # the fields that can create a model first, then the rest
        rest = key[len(ENV_PREFIX):]
        field_name = next((f for f in all_fields if rest.endswith("_" + f.upper())), None)
        if field_name is None:
            raise ConfigError(f"{key}: unknown field; use one of {', '.join(sorted(all_fields))}")
        upper = rest[: -len(field_name) - 1]
        if not upper:
            raise ConfigError(f"{key}: missing model name")
        name = names.get(upper)
        if name is None:
            if field_name not in creating:
                continue  # a setting for a model that is not configured: ignored
            name = names[upper] = upper.lower().replace("_", "-")
            tables[name] = {}
        value: Any = env[key]
        try:
            if field_name in _INT_FIELDS:
                value = int(value)
            elif field_name in _FLOAT_FIELDS:
                value = float(value)
            elif field_name in _BOOL_FIELDS:
                if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError
                value = value.strip().lower() in ("1", "true", "yes")
        except ValueError:
            what = "true or false" if field_name in _BOOL_FIELDS else "a number"
            raise ConfigError(f"{key}: expected {what}, got {value!r}") from None
        table = tables[name]
        if field_name in _DECODING_FIELDS:
            table["decoding"] = {**(table.get("decoding") or {}), field_name: value}
        else:
            table[field_name] = value
            if field_name == "path":  # one checkpoint for every task: the file's per-task paths go
                table.pop("paths", None)
    for table in tables.values():
        if "backend" not in table:
            local = (table.get("path") or table.get("paths")) and not table.get("base_url")
            table["backend"] = "local" if local else "openai"


def config_path(path: "str | Path | None" = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if path:
        return Path(path)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    local = Path.cwd() / "models.toml"
    return local if local.exists() else DEFAULT_FILE


def load_config(path: "str | Path | None" = None, env: Mapping[str, str] | None = None) -> ModelsConfig:
    """The model configuration from the file (see module doc) with environment overrides applied."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    if not file.is_file():
        raise ConfigError(f"model config not found: {file}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    tables = {str(n): dict(t) for n, t in (data.get("models") or {}).items()}
    _env_overrides(tables, env)
    models = {n: _spec(n, t, file.resolve().parent, str(file)) for n, t in tables.items()}
    skipped = {}
    for name, spec in list(models.items()):
        missing = spec.missing_checkpoints() if spec.optional else []
        if not missing:
            continue
        kept = tuple(t for t in spec.tasks if spec.path_for(t) not in missing)
        if kept:   # serve the tasks whose checkpoints exist (e.g. `init` for GP-L without V-IRL-VL's)
            models[name] = replace(spec, tasks=kept, paths={t: p for t, p in spec.paths.items() if t in kept})
            skipped[f"{name} ({', '.join(t for t in spec.tasks if t not in kept)})"] = (
                f"optional model serves {', '.join(kept)} only: no checkpoint at {', '.join(missing)}")
        else:
            skipped[name] = f"optional model left out: no checkpoint at {', '.join(missing)}"
            del models[name]
    return ModelsConfig(models, str(file), skipped)


def dump_toml(models: Mapping[str, ModelSpec], header: str = "") -> str:
    """A `models.toml` text for `models` (a tiny writer for the flat types used here)."""
    lines = [f"# {l}" for l in header.splitlines()] + ([""] if header else [])
    for name, spec in models.items():
        table = spec.to_toml_table()
        decoding = table.pop("decoding")
        paths = table.pop("paths", None)
        lines.append(f"[models.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        if paths:
            lines.append(f"[models.{name}.paths]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in paths.items()]
        if decoding:
            lines.append(f"[models.{name}.decoding]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in decoding.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
