"""Model configuration: one `models.toml` naming the models (`sft`, `rl`, and any extras), with
environment-variable overrides for deployments.

File lookup: an explicit path, else `$SFTVSRL_MODELS_CONFIG`, else `./models.toml`, else the
packaged default (`models/default_models.toml`: `sft` and `rl` = the tiny in-repo GP-L checkpoints
in `models/checkpoints/`, `local` backend; `sftvsrl vllm up` writes a ./models.toml for the 11B
pair). Format:

    [models.sft]
    backend = "openai"                 # "openai" (any OpenAI-compatible server) or "local"
    base_url = "http://127.0.0.1:8001/v1"
    served_name = "sft"                # the server's model id (default: the table name)
    tasks = ["gp-l", "gp-vl"]          # gp-l, gp-vl, virl-l, virl-vl
    label = "SFT"
    [models.sft.decoding]              # default: the paper's evaluation settings (max_tokens 256)
    max_tokens = 256

    [models.rl]
    backend = "local"
    path = "checkpoints/rl"            # Hugging Face checkpoint directory (relative to the file)

Environment overrides, `SFTVSRL_MODEL_<NAME>_<FIELD>` (NAME upper-cased, `-` as `_`), e.g.
`SFTVSRL_MODEL_SFT_BASE_URL`, `SFTVSRL_MODEL_RL_PATH`, `SFTVSRL_MODEL_SFT_TASKS=gp-l,gp-vl`,
`SFTVSRL_MODEL_SFT_MAX_TOKENS`, `SFTVSRL_MODEL_SFT_TEMPERATURE`. Setting `…_BACKEND` (or
`…_BASE_URL` / `…_PATH`) for a name not in the file adds that model. API keys are never stored in
the file: `api_key_env` names the variable that holds one.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .backends import Backend, make_backend
from .decoding import PAPER_EVAL, TASKS, DecodingSettings

ENV_CONFIG = "SFTVSRL_MODELS_CONFIG"
ENV_PREFIX = "SFTVSRL_MODEL_"
DEFAULT_FILE = Path(__file__).with_name("default_models.toml")
BACKENDS = ("openai", "local")
_DECODING_FIELDS = {f.name for f in fields(DecodingSettings)}
_INT_FIELDS = {"max_tokens", "min_tokens", "top_k", "seed", "retries"}
_FLOAT_FIELDS = {"temperature", "top_p", "connect_timeout_s", "read_timeout_s"}


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
    tasks: tuple[str, ...] = TASKS
    label: str | None = None
    decoding: DecodingSettings = field(default_factory=lambda: PAPER_EVAL)
    api_key_env: str | None = None
    device: str | None = None
    image_format: str = "png"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    retries: int = 2

    @property
    def where(self) -> str:
        return (self.base_url or "?") if self.backend == "openai" else (self.path or "?")

    def supports(self, task: str) -> bool:
        return task in self.tasks

    def make_backend(self) -> Backend:
        if self.backend == "openai":
            return make_backend("openai", self.name, base_url=self.base_url, served_name=self.served_name,
                                api_key_env=self.api_key_env, settings=self.decoding,
                                connect_timeout_s=self.connect_timeout_s, read_timeout_s=self.read_timeout_s,
                                retries=self.retries, image_format=self.image_format)
        return make_backend("local", self.name, path=self.path, device=self.device, settings=self.decoding)

    def to_toml_table(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend}
        for key in ("base_url", "served_name", "path", "label", "api_key_env", "device"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        data["tasks"] = list(self.tasks)
        data["decoding"] = self.decoding.to_dict()
        return data


@dataclass
class ModelsConfig:
    models: dict[str, ModelSpec]
    source: str

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
    tasks = data.pop("tasks", TASKS)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"{where}: unknown task(s) {bad}; use {', '.join(TASKS)}")
    known = {f.name for f in fields(ModelSpec)} - {"name", "backend", "decoding", "tasks"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known | {'backend', 'decoding', 'tasks'})}")
    spec = ModelSpec(name=name, backend=backend, tasks=tuple(tasks), decoding=decoding, **data)
    if backend == "openai" and not spec.base_url:
        raise ConfigError(f"{where}: an openai backend needs base_url")
    if backend == "local":
        if not spec.path:
            raise ConfigError(f"{where}: a local backend needs path (a checkpoint directory)")
        p = Path(spec.path).expanduser()
        spec.path = str(p if p.is_absolute() else (base_dir / p))
    return spec


def _env_overrides(tables: dict[str, dict], env: Mapping[str, str]) -> None:
    """Apply `SFTVSRL_MODEL_<NAME>_<FIELD>` variables to the raw tables (in place)."""
    spec_fields = {f.name for f in fields(ModelSpec)} - {"name"}
    all_fields = sorted(spec_fields | _DECODING_FIELDS, key=len, reverse=True)
    names = {n.upper().replace("-", "_"): n for n in tables}
    creating = ("backend", "base_url", "path")
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
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        table = tables[name]
        if field_name in _DECODING_FIELDS:
            table["decoding"] = {**(table.get("decoding") or {}), field_name: value}
        else:
            table[field_name] = value
    for table in tables.values():
        if "backend" not in table:
            table["backend"] = "local" if table.get("path") and not table.get("base_url") else "openai"


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
    return ModelsConfig(models, str(file))


def dump_toml(models: Mapping[str, ModelSpec], header: str = "") -> str:
    """A `models.toml` text for `models` (a tiny writer for the flat types used here)."""
    lines = [f"# {l}" for l in header.splitlines()] + ([""] if header else [])
    for name, spec in models.items():
        table = spec.to_toml_table()
        decoding = table.pop("decoding")
        lines.append(f"[models.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
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
