"""`sftvsrl episodes …`: list, show, replay (step by step, no model) and export (JSONL, Markdown,
self-contained bundle) stored episodes and evaluation runs."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ..evaluation import run_artifacts
from ..export import bundle, episode_jsonl, episode_markdown, replay_events
from ..runner import Finished, Started, StepDone
from ..settings import Settings
from ..store import Store, StoreError
from .errors import CliError


def register(sub) -> None:
    p = sub.add_parser("episodes", help="stored episodes and evaluation runs: list, show, replay, export")
    p.add_argument("--data-dir", help="data directory (default: $SFTVSRL_DATA_DIR or ./data)")
    p.add_argument("--database-url", help="episode store (default: $DATABASE_URL)")
    esub = p.add_subparsers(dest="episodes_command", metavar="COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    ls = esub.add_parser("list", help="list episodes (newest last)")
    _filters(ls)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    runs = esub.add_parser("runs", help="list evaluation runs")
    runs.set_defaults(func=cmd_runs)

    sh = esub.add_parser("show", help="one episode as Markdown")
    sh.add_argument("episode_id")
    sh.set_defaults(func=cmd_show)

    rp = esub.add_parser("replay", help="replay stored episodes step by step, without a model")
    rp.add_argument("episode_id", nargs="*")
    rp.add_argument("--run", help="replay every episode of an evaluation run")
    rp.add_argument("--delay", type=float, default=0.0, help="seconds between steps (for talks)")
    rp.set_defaults(func=cmd_replay)

    ex = esub.add_parser("export", help="export episodes: jsonl (one line per step), markdown, or a bundle zip")
    ex.add_argument("episode_id", nargs="*")
    _filters(ex)
    ex.add_argument("--format", choices=["jsonl", "markdown", "bundle"], default="jsonl")
    ex.add_argument("-o", "--output", help="output file (default: stdout; required for bundle)")
    ex.add_argument("--limit", type=int, default=100000)
    ex.set_defaults(func=cmd_export)


def _filters(p) -> None:
    p.add_argument("--task")
    p.add_argument("--participant")
    p.add_argument("--status")
    p.add_argument("--run", dest="eval_run_id")
    p.add_argument("--split", dest="eval_split")
    p.add_argument("--group", dest="group_id")


def _store(args):
    try:
        settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
        return Store(settings.db_url)
    except (StoreError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _filter_args(args) -> dict:
    return {k: getattr(args, k) for k in ("task", "participant", "status", "eval_run_id", "eval_split", "group_id")
            if getattr(args, k, None) is not None}


def _episode(store, episode_id: str) -> dict:
    ep = store.get_episode(episode_id)
    if ep is None:
        raise CliError(f"no episode {episode_id!r} in {store.safe_url}")
    return ep


def cmd_list(args) -> int:
    store = _store(args)
    eps = store.list_episodes(limit=args.limit, **_filter_args(args))
    if args.json:
        print(json.dumps(eps, indent=1, default=str))
        return 0
    for e in eps:
        print(f"{e['id']}  {e['task']:<7} {e['participant']:<10} {e['status']:<11} success={str(e['success']):<5} "
              f"steps={e['n_steps']:<2} {e['instance_key']}" + (f"  [{e['eval_run_id']}:{e['eval_split']}#{e['eval_index']}]"
                                                            if e['eval_run_id'] else ""))
    return 0


def cmd_runs(args) -> int:
    for r in _store(args).list_runs():
        print(f"{r['id']}  {r['task']:<7} {r['status']:<11} {r['done']}/{r['total']}  models={','.join(r['config']['models'])}")
    return 0


def cmd_show(args) -> int:
    print(episode_markdown(_episode(_store(args), args.episode_id)), end="")
    return 0


def cmd_replay(args) -> int:
    store = _store(args)
    ids = list(args.episode_id)
    if args.run:
        if store.get_run(args.run) is None:
            raise CliError(f"no evaluation run {args.run!r}")
        ids += [e["id"] for e in store.run_episodes(args.run)]
    if not ids:
        raise CliError("name episode ids or --run RUN_ID")
    for eid in ids:
        _episode(store, eid)

    async def go():
        for eid in ids:
            async for ev in replay_events(store, eid, delay_s=args.delay):
                if isinstance(ev, Started):
                    print(f"== {ev.participant} on {ev.task} {json.dumps(ev.instance['params'])}")
                elif isinstance(ev, StepDone):
                    out = ev.output.strip().replace("\n", " ")
                    print(f"  call {ev.call}: {ev.outcome:<17} {ev.reward:+g}  {out[:100]}")
                    print(f"           verifier: {ev.feedback[:120]}")
                elif isinstance(ev, Finished):
                    print(f"  -> {ev.status}, success={ev.success}, return {ev.episode_return:g}")
                sys.stdout.flush()

    asyncio.run(go())
    return 0


def cmd_export(args) -> int:
    store = _store(args)
    if args.episode_id:
        eps = [_episode(store, e) for e in args.episode_id]
    else:
        eps = [store.get_episode(e["id"]) for e in store.list_episodes(limit=args.limit, **_filter_args(args))]
    if args.format == "bundle":
        if not args.output:
            raise CliError("a bundle is a zip file: give -o FILE.zip")
        extra = {}
        run_id = getattr(args, "eval_run_id", None)
        if run_id and store.get_run(run_id):
            extra = run_artifacts(store, run_id)
        Path(args.output).write_bytes(bundle(eps, title=f"{len(eps)} episodes", extra=extra))
        print(f"wrote {args.output} ({len(eps)} episodes)", file=sys.stderr)
        return 0
    text = "".join(episode_jsonl(eps)) if args.format == "jsonl" else "\n".join(episode_markdown(e) for e in eps)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
