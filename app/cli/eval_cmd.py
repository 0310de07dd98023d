"""`sftvsrl eval`: the paper's batch evaluations (see `app.evaluation`), resumable, with a progress
bar; prints the Markdown table and writes table.md, plot.png, summary.json and per-step JSONL.

Sharded (see `app.shards`): `sftvsrl eval ... --shard i/N` plays shard i of N (resume per shard with
`--resume`); `sftvsrl eval merge RUN_ID ...` (or `sftvsrl eval merge <same flags> --shards N`)
combines the N finished shards into one run and writes its outputs as above. Both go through
`app.services`, as the API and the UI do."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from game.gp.phrasings import read_phrasings
from game.tasks import TASKS

from .. import services
from ..evaluation import EvalConfig, EvalError, Progress, find_resumable, markdown_table, release_sources, write_outputs
from ..live import ModelPool
from ..settings import Settings
from ..shards import ShardError, parse_shard
from ..store import Store, StoreError
from .errors import CliError


def register(sub) -> None:
    p = sub.add_parser("eval", help="run the paper's evaluation protocol for several models (paired, resumable); "
                                    "'eval merge' combines shards")
    p.add_argument("action", nargs="?", choices=["merge"],
                   help="merge: combine the finished shard runs (RUN_ID ..., or those of these flags with --shards N)")
    p.add_argument("runs", nargs="*", metavar="RUN_ID", help="shard runs to merge")
    p.add_argument("--task", choices=list(TASKS))
    p.add_argument("--models", nargs="+", metavar="NAME", help="configured model names")
    p.add_argument("--shard", metavar="i/N", help="play only shard i of N (0 <= i < N): every N-th instance from i; "
                                                  "merge the N shard runs with 'sftvsrl eval merge'")
    p.add_argument("--shards", type=int, metavar="N", help="eval merge: the latest run of each of the N shards "
                                                           "with these settings")
    p.add_argument("--episodes", type=int, help="episodes per split (default: the paper's 234 GP / 48 V-IRL; "
                                                "at most 10,000)")
    p.add_argument("--splits", nargs="+", metavar="SPLIT",
                   help="id, rule-ood, and visual-ood (gp-vl, virl-vl) or streets (virl-l); default: all of the task")
    p.add_argument("--seed", type=int, help="instance-stream seed (default: the protocol's 42 GP, 0 V-IRL)")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent episodes per model (default 4)")
    p.add_argument("--max-tokens", type=int, help="override the models' max_tokens")
    p.add_argument("--config", "--models-config", dest="config", help="models.toml")
    p.add_argument("--data-dir", help="data directory (default: $SFTVSRL_DATA_DIR or ./data)")
    p.add_argument("--database-url", help="episode store (default: $DATABASE_URL or sqlite:///DATA_DIR/playground.db)")
    p.add_argument("--out", help="output folder (default: DATA_DIR/eval/RUN_ID)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                   help="continue the latest run with the same settings (or RUN_ID) where it stopped")
    p.add_argument("--virl-source", help="V-IRL routes for id / rule-ood (default: $SFTVSRL_VIRL_RELEASE or "
                                         "DATA_DIR/nyc_1k_routes when present, else bundled:helsinki)")
    p.add_argument("--virl-visual-source", help="V-IRL held-out routes (visual-ood / streets) (default: $SFTVSRL_VIRL_VLN_MINI or "
                                                "DATA_DIR/VLN_mini when present, else bundled:helsinki-ood)")
    p.add_argument("--recognition", action="store_true",
                   help="gp-vl recognition protocol: one attempt per episode, no verification")
    p.add_argument("--phrasings", metavar="FILE",
                   help="GP-L reworded split: state the J/Q/K = 10 rule in these words instead of the held-out "
                        "ones (one clause per line, # comments; hand i uses line i mod N)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _config(args):
    """The evaluation the flags describe."""
    if not args.task or not args.models:
        raise CliError("name the evaluation with --task and --models")
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    sources = release_sources(Path(args.data_dir or Settings.from_env().data_dir))
    if args.virl_source:
        sources["id"] = args.virl_source
    if args.virl_visual_source:
        sources["ood"] = args.virl_visual_source
    phrasings = None
    if args.phrasings:
        try:
            phrasings = list(read_phrasings(args.phrasings))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CliError(f"--phrasings: {exc}") from None
    try:
        return EvalConfig(task=args.task, models=args.models, splits=args.splits, episodes=args.episodes,
                          seed=args.seed, max_tokens=args.max_tokens, concurrency=args.concurrency,
                          sources=sources, recognition=args.recognition, phrasings=phrasings)
    except EvalError as exc:
        raise CliError(str(exc)) from None


def _context(args, concurrency: int = 4):
    """The service context of this command: settings, store and the configured models."""
    try:
        settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url,
                                     models_config=args.config)
        store = Store(settings.db_url)
    except (StoreError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return services.cli_context(settings, store, ModelPool.from_file(settings.models_config, concurrency))


def _print_outputs(ctx, args, run_id: str, what: str) -> int:
    out = Path(args.out) if args.out else ctx.settings.data_dir / "eval" / run_id
    summary = write_outputs(ctx.store, run_id, out)
    print(markdown_table(summary))
    print(f"{what} {run_id}: table {out / 'table.md'}, plot {out / 'plot.png'}, per-step JSONL in {out}",
          file=sys.stderr)
    return 0 if not summary["errors"] else 1


def cmd_eval(args) -> int:
    if args.action == "merge":
        return cmd_merge(args)
    if args.runs:
        raise CliError(f"unexpected argument(s) {' '.join(args.runs)} (did you mean 'sftvsrl eval merge'?)")
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ShardError as exc:
        raise CliError(str(exc)) from None
    config = _config(args)
    ctx = _context(args, args.concurrency)
    store, pool = ctx.store, ctx.pool
    if pool.error:
        raise CliError(pool.error)
    if not args.resume:
        prior = find_resumable(store, config, shard)
        if prior is not None and prior["status"] in ("running", "interrupted", "error"):
            print(f"note: run {prior['id']} with these settings stopped at {prior['done']}/{prior['total']}; "
                  "--resume continues it (starting a new run)", file=sys.stderr)
    progress = None

    def on_progress(done: int, total: int) -> None:
        nonlocal progress
        if args.quiet:
            return
        if progress is None:
            progress = Progress(total, done)
        progress.done = done
        progress.draw()

    async def main() -> str:
        try:
            run_id, job = await services.start_evaluation(
                ctx, services.CLI, config, resume=(True if args.resume == "latest" else args.resume) or False,
                on_progress=on_progress, shard=shard)
            run = store.get_run(run_id)
            if args.resume:
                print(f"resuming run {run_id} ({run['done']}/{run['total']} episodes done)", file=sys.stderr)
            if not args.quiet:
                print(f"{args.task}: {', '.join(config.splits)} × {', '.join(args.models)}", file=sys.stderr)
            return await job
        finally:
            await pool.aclose()

    try:
        run_id = asyncio.run(main())
    except services.ServiceError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        pool.wait_idle()
        if progress:
            progress.close()
        prior = find_resumable(store, config, shard)
        rid = prior["id"] if prior else "?"
        print(f"\ninterrupted: run {rid} kept every finished step; continue with --resume", file=sys.stderr)
        return 130
    pool.wait_idle()
    if progress:
        progress.close()
    return _print_outputs(ctx, args, run_id, "run")


def cmd_merge(args) -> int:
    """`sftvsrl eval merge`: the N finished shard runs → one run; prints its table, writes its outputs."""
    if not args.runs and not (args.task and args.models and args.shards):
        raise CliError("sftvsrl eval merge takes the shard RUN_IDs, or the evaluation's flags with --shards N")
    config = None if args.runs else _config(args)
    ctx = _context(args)
    try:
        run_id = services.merge_shards(ctx, args.runs, config=config, count=args.shards)
    except services.ServiceError as exc:
        raise CliError(str(exc)) from None
    return _print_outputs(ctx, args, run_id, "merged shards into run")
