"""Decoding settings: the one place for the paper's defaults per task and mode.

Facts (spec generalpoints.md §2.7, virl.md §1.7):
- evaluation (both tasks, L and VL): only `max_new_tokens = 256` is passed; everything else comes
  from the checkpoint's `generation_config.json` (believed, not confirmed: sampling, T 0.6, top-p 0.9);
- RL rollouts: `temperature = 0.2`, `max_new_tokens = 512`, no explicit `do_sample`;
- API evaluation: `max_tokens = 256`, provider defaults otherwise.

`None` means "leave it to the model / server default", which is what the paper's evaluation did.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from game import tasks as _registry


def registry_tasks() -> tuple[str, ...]:
    """The registry's task names now (gp-l, gp-vl, virl-l, virl-vl and any task registered since):
    read at each call, never copied at import, so a task added later is known here too."""
    return tuple(_registry.TASKS)


@dataclass(frozen=True)
class DecodingSettings:
    """Per-request decoding settings. `None` fields are not sent (model defaults apply)."""

    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    do_sample: bool | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Not an OpenAI field: vLLM's `min_tokens` / transformers' `min_new_tokens` (end-of-turn
    # suppressed until then). Sent only when set.
    min_tokens: int | None = None

    def merged(self, overrides: Mapping[str, Any] | None) -> "DecodingSettings":
        """A copy with the known keys of `overrides` applied (`max_new_tokens` is an alias)."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        data = {}
        for key, value in overrides.items():
            key = "max_tokens" if key == "max_new_tokens" else key
            if key not in known:
                raise ValueError(f"unknown decoding setting {key!r}: use one of {', '.join(sorted(known))}")
            if key == "stop" and value is not None:
                value = (value,) if isinstance(value, str) else tuple(value)
            data[key] = value
        return replace(self, **data)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ()}


# The paper's evaluation settings: 256 new tokens, checkpoint defaults otherwise (both tasks).
PAPER_EVAL = DecodingSettings(max_tokens=256)
# The paper's RL rollout sampling (PPO data collection).
PAPER_RL_ROLLOUT = DecodingSettings(max_tokens=512, temperature=0.2)
# What the base Llama-3.2-Vision-Instruct generation_config is believed to ship (unconfirmed).
LLAMA_INSTRUCT_DEFAULT = DecodingSettings(max_tokens=256, do_sample=True, temperature=0.6, top_p=0.9)

PRESETS: dict[str, DecodingSettings] = {
    "eval": PAPER_EVAL,
    "rl": PAPER_RL_ROLLOUT,
    "llama-default": LLAMA_INSTRUCT_DEFAULT,
    "greedy": DecodingSettings(max_tokens=256, temperature=0.0, do_sample=False),
}


def paper_defaults(task: str = "gp-l", mode: str = "eval") -> DecodingSettings:
    """The paper's decoding for `task` (gp-l, gp-vl, virl-l, virl-vl) in `mode` (eval or rl).

    The paper uses the same settings for all four tasks; the task argument exists so callers
    state what they decode for and a future per-task difference has one place to live.
    """
    known = registry_tasks()
    if task not in known:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(known)}")
    if mode not in ("eval", "rl"):
        raise ValueError(f"unknown mode {mode!r}: use 'eval' or 'rl'")
    return PAPER_EVAL if mode == "eval" else PAPER_RL_ROLLOUT
