"""`sftvsrl train …`: train the tiny in-repo checkpoints on CPU and evaluate them with the paper's
protocol — `train sft`, `train rl --init SFT`, `train eval CKPT…`, `train table --sft … --rl …`
(evaluation table for init/SFT/RL, written into eval.json and each model card)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from game.tasks import TASKS as REGISTRY
from models.train.tasks import TRAINING

from . import CliError

TASKS = tuple(TRAINING)                                           # sft / rl / eval / pipeline (text tasks)
VISION = tuple(t for t, spec in REGISTRY.items() if spec.vision)   # the vision pipeline's tasks


def register(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate the tiny SFT / RL checkpoints (CPU)")
    p.set_defaults(func=lambda args: p.print_help())
    tsub = p.add_subparsers(dest="train_command", metavar="COMMAND")

    def common(q, out_default):
        q.add_argument("--task", default=TASKS[0], help=" or ".join(TASKS))
        q.add_argument("--quick", action="store_true", help="a seconds-long run (tests, smoke checks)")
        q.add_argument("--out", default=None, help=f"output checkpoint directory (default: {out_default})")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
        q.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = tsub.add_parser("sft", help="supervised fine-tuning on expert single-turn answers (ID rule)")
    common(s, "runs/<task>-sft")
    s.add_argument("--steps", type=int, help="optimizer steps (default: the task's preset; 6 with --quick)")
    s.add_argument("--batch-size", type=int)
    s.set_defaults(func=_cmd_sft)

    r = tsub.add_parser("rl", help="GRPO from an SFT checkpoint with the verifier's reward (multi-turn, ID rule)")
    common(r, "runs/<task>-rl")
    r.add_argument("--init", required=True, help="the SFT checkpoint directory")
    r.add_argument("--updates", type=int, help="GRPO updates (default 20; 2 with --quick)")
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

    pl = tsub.add_parser("pipeline", help="the staged pipeline: base -> init -> sft / rl / sft-diverse, then the "
                                          "five-way evaluation (findings.json)")
    pl.add_argument("--task", default=TASKS[0], help=" or ".join(TASKS))
    pl.add_argument("--quick", action="store_true", help="a seconds-long run (tests, smoke checks)")
    pl.add_argument("--out", default=None, help="output directory (default: runs/pipeline/<task>)")
    pl.add_argument("--stages", default=",".join(("base", "init", "sft", "rl", "sft-diverse")),
                    help="comma-separated stages to train (existing ones are kept: resumable)")
    pl.add_argument("--no-eval", action="store_true", help="train only; skip the evaluation")
    pl.add_argument("--workers", type=int, default=1, help="evaluate checkpoints in this many processes (default 1)")
    pl.add_argument("--seeds", default=None,
                    help="training seeds of SFT and RL to run, comma-separated (default: the config's, e.g. 0,1,2); "
                         "run seeds in separate processes, then evaluate once")
    pl.add_argument("--print-config", action="store_true",
                    help="print the fully resolved configuration (the task's preset) as JSON and exit")
    pl.add_argument("--ship", metavar="DIR", default=None,
                    help="after the evaluation, copy the table's checkpoints (with their model cards) to "
                         "DIR/<task>-<stage> and findings.json + episodes to DIR/findings/<task> "
                         "(the repo's models/checkpoints ships them)")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    pl.add_argument("--no-progress", action="store_true")
    pl.set_defaults(func=_cmd_pipeline)

    v = tsub.add_parser("vision", help="the tiny vision-language pipeline (Mllama): base -> init -> sft / rl / "
                                       "sft-diverse on GP-VL, then the evaluation with recognition accuracy "
                                       "(findings.json, episodes.jsonl.gz)")
    v.add_argument("--task", default=VISION[0], help=" or ".join(VISION) + " (the stages each trains: --stages)")
    v.add_argument("--quick", action="store_true", help="a seconds-long run (tests, smoke checks)")
    v.add_argument("--out", default=None, help="output directory (default: runs/vision/<task>)")
    v.add_argument("--stages", default="base,init,sft,rl,sft-diverse",
                   help="comma-separated stages to train (existing ones are kept: resumable)")
    v.add_argument("--n", type=int, default=None, help="episodes per split (default 100; 3 with --quick)")
    v.add_argument("--no-eval", action="store_true", help="train only; skip the evaluation")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_cmd_vision)

    t = tsub.add_parser("table", help="evaluate init/SFT/RL, write eval.json and the model cards")
    t.add_argument("--task", default=None, help="checked against the SFT checkpoint's training.json")
    t.add_argument("--sft", required=True)
    t.add_argument("--rl")
    t.add_argument("--n", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_table)


def _task(args) -> str:
    if args.task not in TASKS:
        raise CliError(f"task {args.task!r} is not supported by the tiny trainer yet; use {', '.join(TASKS)}")
    return args.task


def _threads(args) -> dict:
    return {"threads": args.threads} if args.threads else {}


def _cmd_sft(args) -> int:
    from models.train.sft import quick_config, train_sft

    task = _task(args)
    cfg = quick_config(args.quick, args.seed, task=task, steps=args.steps, batch_size=args.batch_size, **_threads(args))
    out = args.out or f"runs/{task}-sft{'-quick' if args.quick else ''}"
    rec = train_sft(cfg, out, progress=not args.no_progress)
    print(f"saved {out}: {rec['parameters']:,} parameters, {rec['steps']} steps in {rec['train_s']} s "
          f"({rec['steps_per_s']} steps/s), final loss {rec['final_loss']:.4f}, wall {rec['wall_s']} s")
    return 0


def _cmd_rl(args) -> int:
    from models.train.grpo import quick_config, train_grpo

    task = _task(args)
    if not (Path(args.init) / "config.json").is_file():
        raise CliError(f"no checkpoint at {args.init} (config.json missing)")
    from models.train.common import read_record

    trained_for = read_record(args.init).get("task")
    if trained_for and trained_for != task:
        raise CliError(f"--task {task} but {args.init} was trained for {trained_for}")
    cfg = quick_config(args.quick, args.seed, task=task, updates=args.updates, **_threads(args))
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
    from dataclasses import asdict, replace

    from models.train.pipeline import STAGES, TASKS as PIPELINE_TASKS, PipelineConfig, cell_value, \
        evaluate_pipeline, ship_pipeline, train_pipeline

    if args.task not in PIPELINE_TASKS:
        raise CliError(f"the staged pipeline supports {', '.join(PIPELINE_TASKS)}, not {args.task!r}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise CliError(f"unknown stage(s) {', '.join(bad)}; stages are {', '.join(STAGES)}")
    cfg = PipelineConfig.for_task(args.task, quick=args.quick, seed=args.seed)
    if args.threads:
        cfg = replace(cfg, threads=args.threads)
    seeds = None
    if args.seeds:
        try:
            seeds = tuple(int(x) for x in args.seeds.split(","))
        except ValueError:
            raise CliError(f"--seeds takes comma-separated whole numbers, not {args.seeds!r}") from None
    if args.print_config:
        print(json.dumps(asdict(cfg), indent=2))
        return 0
    out = Path(args.out or f"runs/pipeline/{args.task}{'-quick' if args.quick else ''}")
    records = train_pipeline(cfg, out, stages=stages, seeds=seeds, progress=not args.no_progress)
    for stage, rec in records.items():
        print(f"{stage:<14} {rec.get('wall_s', 0):>7} s")
    if args.no_eval:
        return 0
    findings = evaluate_pipeline(out, cfg, progress=not args.no_progress, workers=max(1, args.workers))
    for stage, row in findings["table"].items():
        cells = "   ".join(f"{s} {100 * cell_value(row[s]):5.1f} ± {100 * row[s]['se']:.1f} %" for s in cfg.splits)
        print(f"{stage:<12} {cells}   KL(init||model) {row['kl_from_init']:.3f}")
    print(f"wrote {out / 'findings.json'}", file=sys.stderr)
    if args.ship:
        for path in ship_pipeline(out, args.ship):
            print(f"shipped {path}", file=sys.stderr)
    return 0


def _cmd_vision(args) -> int:
    from dataclasses import replace

    from models.train.vision import STAGES, TASK_STAGES, TASKS as VISION_TASKS, VisionConfig, evaluate_vision, \
        train_vision

    if args.task not in VISION_TASKS:
        raise CliError(f"the vision pipeline supports {', '.join(VISION_TASKS)}, not {args.task!r}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip() and s.strip() in TASK_STAGES[args.task]]
    bad = [s for s in args.stages.split(",") if s.strip() and s.strip() not in STAGES]
    if bad:
        raise CliError(f"unknown stage(s) {', '.join(bad)}; stages are {', '.join(STAGES)}")
    cfg = VisionConfig.for_task(args.task, args.quick, args.seed)
    cfg = replace(cfg, **{k: v for k, v in (("threads", args.threads), ("eval_n", args.n)) if v})
    out = Path(args.out or f"runs/vision/{args.task}{'-quick' if args.quick else ''}")
    records = train_vision(cfg, out, stages=stages, progress=not args.no_progress)
    for stage, rec in records.items():
        print(f"{stage:<6} {rec.get('wall_s', 0):>7} s  {out / stage}")
    if args.no_eval:
        return 0
    findings = evaluate_vision(out, cfg, progress=not args.no_progress)
    for stage, row in findings["table"].items():
        cells = "   ".join(f"{s} {100 * r['success']:5.1f} ± {100 * r['success_se']:.1f} % (per step "
                           f"{100 * r['per_step_accuracy']:.1f} %" + (f", recognition {100 * r['recognition']:.1f} %"
                                                                     if r.get('recognition') is not None else "") + ")"
                           for s, r in row.items() if s in findings["protocol"]["splits"])
        print(f"{stage:<6} {cells}")
    print(f"wrote {out / 'findings.json'}", file=sys.stderr)
    return 0


def _cmd_table(args) -> int:
    from models.train.card import evaluation_table, table_markdown, write_cards, write_eval
    from models.train.common import read_record

    task = read_record(args.sft).get("task")
    if task not in TASKS:
        raise CliError(f"{args.sft}: no tiny-trainer training.json (task {task!r})")
    if args.task and args.task != task:
        raise CliError(f"--task {args.task} but {args.sft} was trained for {task}")
    table = evaluation_table(args.sft, args.rl, args.n, seed=args.seed, progress=not args.no_progress)
    write_eval(table, *[d for d in (args.sft, args.rl) if d])
    write_cards(args.sft, args.rl)
    print(table_markdown(table))
    print(f"wrote eval.json and README.md in {args.sft}" + (f" and {args.rl}" if args.rl else ""), file=sys.stderr)
    return 0
