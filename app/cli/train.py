"""`sftvsrl train …`: train the tiny in-repo checkpoints on CPU and evaluate them with the paper's
protocol — `train pipeline` / `train vision` (the staged pipeline that makes every shipped
checkpoint, its evaluation and shipping), `train rl --init CKPT` (the pipeline's GRPO from any
checkpoint) and `train eval CKPT…` (the evaluation protocol, batched in-process)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from game.tasks import TASKS as REGISTRY
from models.train.tasks import TRAINING, VISION_TRAINING

from .errors import CliError

TASKS = tuple(TRAINING)                                           # rl / eval (text tasks)
VISION = tuple(VISION_TRAINING)                                   # the vision tasks
STAGED = TASKS + VISION                                           # the staged pipeline's tasks


def register(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate the tiny SFT / RL checkpoints (CPU)")
    p.set_defaults(func=lambda args: p.print_help())
    tsub = p.add_subparsers(dest="train_command", metavar="COMMAND")

    r = tsub.add_parser("rl", help="GRPO from any checkpoint with the task's pipeline RL settings (multi-turn, the "
                                   "verifier's reward, ID training instances only)")
    r.add_argument("--task", default=TASKS[0], help=" or ".join(TASKS))
    r.add_argument("--init", help="the checkpoint directory to start from, e.g. a pipeline Init or SFT (required "
                                  "to train)")
    r.add_argument("--quick", action="store_true", help="the pipeline's --quick RL settings (tests, smoke checks)")
    r.add_argument("--out", default=None, help="output checkpoint directory (default: runs/<task>-rl)")
    r.add_argument("--updates", type=int, help="at most this many GRPO updates (default: the pipeline's RL stage's)")
    r.add_argument("--seed", type=int, default=0, help="the training seed (the pipeline's seed-<k> RL run)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the pipeline's, 1)")
    r.add_argument("--val-unseen", action="store_true", default=None,
                   help="validate the early stop on problems RL never practises (GRPOConfig.val_unseen: the "
                        "rollouts skip the validation hands' card multisets / routes)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--print-config", action="store_true",
                   help="print the fully resolved GRPO configuration (the task's pipeline RL stage, then these "
                        "flags) as JSON and exit")
    r.set_defaults(func=_cmd_rl)

    e = tsub.add_parser("eval", help="the evaluation protocol (game.protocol), batched in-process: episode success, "
                                     "per-step accuracy, binomial SEs, on the task's splits")
    e.add_argument("paths", nargs="+", help="checkpoint directories")
    e.add_argument("--task", default=TASKS[0], help=" or ".join(TASKS))
    e.add_argument("--n", type=int, default=500, help="episodes per split (default 500; a split with one episode "
                                                      "per route, V-IRL-L streets, stops at its routes)")
    e.add_argument("--split", default="both",
                   help="a split of the task (" + "; ".join(f"{t}: {', '.join(REGISTRY[t].split_names)}"
                                                            for t in TASKS) + "), both (id + rule-ood) or all")
    e.add_argument("--greedy", action="store_true", help="greedy decoding instead of the checkpoint default")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_cmd_eval)

    def staged(q, task_default: str, tasks: tuple[str, ...]) -> None:
        """The staged pipeline's flags (`train pipeline`, `train vision`: one runner, one config)."""
        q.add_argument("--task", default=task_default, help=" or ".join(tasks) + " (the stages each trains: --stages)")
        q.add_argument("--quick", action="store_true", help="a seconds-long run (tests, smoke checks)")
        q.add_argument("--stages", default=None,
                       help="comma-separated stages to train (default: every stage the task trains; existing ones "
                            "are kept: resumable)")
        q.add_argument("--no-eval", action="store_true", help="train only; skip the evaluation")
        q.add_argument("--n", type=int, default=None, help="episodes per split when evaluating (default: the "
                                                            "config's eval_n)")
        q.add_argument("--print-config", action="store_true",
                       help="print the fully resolved configuration (defaults + the task's preset) as JSON and exit")
        q.add_argument("--explain", action="store_true",
                       help="print every field of the resolved configuration with what it means, and exit")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's, 1)")
        q.add_argument("--no-progress", action="store_true")

    pl = tsub.add_parser("pipeline", help="the staged pipeline of any trainable task: base -> init -> sft / rl / "
                                          "sft-diverse, then the evaluation (findings.json; text tasks: five-way "
                                          "with every lens)")
    staged(pl, TASKS[0], STAGED)
    pl.add_argument("--out", default=None, help="output directory (default: runs/pipeline/<task>)")
    pl.add_argument("--workers", type=int, default=1, help="evaluate checkpoints in this many processes (default 1)")
    pl.add_argument("--seeds", default=None,
                    help="training seeds of SFT and RL to run, comma-separated (default: the config's, e.g. 0,1,2); "
                         "run seeds in separate processes, then evaluate once")
    pl.add_argument("--ship", metavar="DIR", default=None,
                    help="after the evaluation, copy the table's checkpoints (with their model cards) to "
                         "DIR/<task>-<stage> and findings.json + episodes to DIR/findings/<task> "
                         "(the repo's models/checkpoints ships them)")
    pl.set_defaults(func=_cmd_pipeline, out_root="runs/pipeline")

    v = tsub.add_parser("vision", help="the staged pipeline of a vision task (tiny Mllama; `train pipeline` with a "
                                       "vision task): base -> init -> sft / rl / sft-diverse on GP-VL, then the "
                                       "evaluation with recognition accuracy (findings.json, episodes.jsonl.gz)")
    staged(v, VISION[0], VISION)
    v.add_argument("--out", default=None, help="output directory (default: runs/vision/<task>)")
    v.set_defaults(func=_cmd_pipeline, out_root="runs/vision", workers=1, seeds=None, ship=None)


def _task(args) -> str:
    if args.task not in TASKS:
        raise CliError(f"task {args.task!r} is not supported by the tiny trainer yet; use {', '.join(TASKS)}")
    return args.task


def _cmd_rl(args) -> int:
    from dataclasses import asdict

    from models.train.common import read_record
    from models.train.config import rl_config
    from models.train.grpo import train_grpo

    task = _task(args)
    cfg = rl_config(task, quick=args.quick, seed=args.seed, threads=args.threads, updates=args.updates,
                    val_unseen=args.val_unseen)
    if args.print_config:
        print(json.dumps(asdict(cfg), indent=2))
        return 0
    if not args.init:
        raise CliError("train rl needs --init (the checkpoint directory to start from)")
    if not (Path(args.init) / "config.json").is_file():
        raise CliError(f"no checkpoint at {args.init} (config.json missing)")
    trained_for = read_record(args.init).get("task")
    if trained_for and trained_for != task:
        raise CliError(f"--task {task} but {args.init} was trained for {trained_for}")
    out = args.out or f"runs/{task}-rl{'-quick' if args.quick else ''}"
    rec = train_grpo(cfg, args.init, out, progress=not args.no_progress)
    last = rec["history"][-1] if rec["history"] else {}
    print(f"saved {out}: {rec['updates']} updates, {rec['episodes']} episodes in {rec['wall_s']} s; "
          f"last rollout return {last.get('mean_return', 0):+.2f}, success {last.get('success', 0):.2f}")
    return 0


def _cmd_eval(args) -> int:
    from game import protocol
    from models.train.common import load_checkpoint
    from models.train.evaluate import evaluate

    task = _task(args)
    known = protocol.splits(task)
    splits = {"both": ("id", "rule-ood"), "all": known}.get(args.split, (args.split,))
    bad = [s for s in splits if s not in known]
    if bad:
        raise CliError(f"unknown split {bad[0]!r} for {task}; use {', '.join(known)}, both or all")
    results = {}
    for path in args.paths:
        if not (Path(path) / "config.json").is_file():
            raise CliError(f"no checkpoint at {path} (config.json missing)")
        model, tok = load_checkpoint(path)
        results[path] = {s: evaluate(model, tok, task, s, args.n, seed=args.seed,
                                     temperature=0 if args.greedy else None, progress=not args.no_progress)
                         for s in splits}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for path, res in results.items():
        for s, r in res.items():
            print(f"{path}  {s:<8}  success {100 * r['success_rate']:5.1f} ± {100 * r['success_se']:.1f} %  "
                  f"per-step acc {100 * r['per_step_accuracy']:5.1f} ± {100 * r['per_step_se']:.1f} %  "
                  f"first-try {100 * r['first_try_success']:5.1f} %  n={r['episodes']}  ({r['decoding']})")
    return 0


def _cmd_pipeline(args) -> int:
    from dataclasses import asdict, fields

    from models.train.config import docs, pipeline_config
    from models.train.pipeline import STAGES, PipelineConfig, cell_value, evaluate_stages, ship_pipeline, \
        train_pipeline
    from models.train.tasks import training_task

    if args.task not in STAGED:
        raise CliError(f"the staged pipeline supports {', '.join(STAGED)}, not {args.task!r}")
    own = training_task(args.task, vision=True).stages
    asked = [s.strip() for s in (args.stages or ",".join(own)).split(",") if s.strip()]
    bad = [s for s in asked if s not in STAGES]
    if bad:
        raise CliError(f"unknown stage(s) {', '.join(bad)}; stages are {', '.join(STAGES)}")
    stages = [s for s in asked if s in own]   # a stage the task does not train is skipped
    seeds = None
    if args.seeds:
        try:
            seeds = tuple(int(x) for x in args.seeds.split(","))
        except ValueError:
            raise CliError(f"--seeds takes comma-separated whole numbers, not {args.seeds!r}") from None
    cfg = pipeline_config(args.task, quick=args.quick, seed=args.seed, threads=args.threads, eval_n=args.n)
    if args.print_config:
        print(json.dumps(asdict(cfg), indent=2))
        return 0
    if args.explain:
        for f in fields(cfg):
            value = getattr(cfg, f.name)
            print(f"{f.name} = {json.dumps(asdict(value) if hasattr(value, '__dataclass_fields__') else value)}"
                  f"  # {docs(type(cfg))[f.name]}")
        return 0
    out = Path(args.out or f"{args.out_root}/{args.task}{'-quick' if args.quick else ''}")
    records = train_pipeline(cfg, out, stages=stages, seeds=seeds, progress=not args.no_progress)
    for stage, rec in records.items():
        print(f"{stage:<14} {rec.get('wall_s', 0):>7} s")
    if args.no_eval:
        return 0
    findings = evaluate_stages(out, cfg, progress=not args.no_progress, workers=max(1, args.workers))
    for stage, row in findings["table"].items():
        if isinstance(cfg, PipelineConfig):
            cells = "   ".join(f"{s} {100 * cell_value(row[s]):5.1f} ± {100 * row[s]['se']:.1f} %" for s in cfg.splits)
            print(f"{stage:<12} {cells}   KL(init||model) {row['kl_from_init']:.3f}")
        else:
            cells = "   ".join(f"{s} {100 * r['success']:5.1f} ± {100 * r['success_se']:.1f} % (per step "
                               f"{100 * r['per_step_accuracy']:.1f} %" + (
                                   f", recognition {100 * r['recognition']:.1f} %"
                                   if r.get('recognition') is not None else "") + ")"
                               for s, r in row.items() if s in findings["protocol"]["splits"])
            print(f"{stage:<6} {cells}")
    print(f"wrote {out / 'findings.json'}", file=sys.stderr)
    if args.ship:
        for path in ship_pipeline(out, args.ship):
            print(f"shipped {path}", file=sys.stderr)
    return 0

