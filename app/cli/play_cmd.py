"""`sftvsrl play`: one instance, several participants (models and/or you), streamed in the
terminal through the same runner the API and the evaluation use; every step lands in the store."""
from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from game.tasks import DEFAULT_TASK, TASKS, Instance, InstanceError, open_session

from .. import services
from ..live import ModelPool
from ..runner import Delta, Finished, HumanPlayer, PromptSent, Started, StepDone, Waiting, play_paired
from ..settings import Settings
from ..store import Store, StoreError
from .errors import CliError


def register(sub) -> None:
    p = sub.add_parser("play", help="play one GP deal or V-IRL route with models and/or yourself, side by side")
    p.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS))
    p.add_argument("--deal", help="GP deal id (default: the first hand of the paper's evaluation list)")
    p.add_argument("--rule", default="face10", help="face10 (ID) or face_jqk (rule OOD)")
    p.add_argument("--route", help="V-IRL route index or id (default: drawn from --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relative", action="store_true", help="V-IRL relative action space (rule OOD)")
    p.add_argument("--source", help="V-IRL route source (default bundled:helsinki)")
    p.add_argument("--models", nargs="*", default=[], metavar="NAME")
    p.add_argument("--human", action="store_true", help="play yourself (type a formula / an action per turn)")
    p.add_argument("--config", help="models.toml")
    p.add_argument("--data-dir")
    p.add_argument("--database-url")
    p.set_defaults(func=cmd_play)


def cmd_play(args) -> int:
    if not args.models and not args.human:
        raise CliError("name --models and/or --human")
    given = {"deal_id": args.deal or "HKC5D2C4", "rule": args.rule, "source": args.source or "bundled:helsinki",
             "seed": args.seed, "absolute_action": not args.relative, "route": args.route}
    fields = TASKS[args.task].config_type.__dataclass_fields__  # the options this task takes
    params = {k: v for k, v in given.items() if k in fields and v is not None}
    try:
        instance = Instance(args.task, params)
        open_session(instance)
        settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url,
                                     models_config=args.config)
        store = Store(settings.db_url)
    except (InstanceError, StoreError, ValueError) as exc:
        raise CliError(str(exc)) from None
    pool = ModelPool.from_file(settings.models_config)
    ctx = services.cli_context(settings, store, pool)
    try:
        players: list[Any] = [services.model_player(ctx, name, instance.task) for name in args.models]
    except services.ServiceError as exc:
        raise CliError(str(exc)) from None
    human = HumanPlayer(name="you") if args.human else None
    if human:
        players.append(human)
    single = len(players) == 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        names: dict[str, str] = {}  # episode id -> participant
        try:
            async for ev in play_paired(players, instance, store):
                who = names.get(ev.episode_id, "")
                if isinstance(ev, Started):
                    names[ev.episode_id] = ev.participant
                    if ev.participant == players[0].name:
                        print(json.dumps(ev.info, ensure_ascii=False))
                    print(f"[{ev.participant}] episode {ev.episode_id}")
                elif isinstance(ev, PromptSent) and ev.call == 1 and single:
                    print(ev.messages[-1]["content"][-1]["text"])
                elif isinstance(ev, Delta) and single:
                    print(ev.text, end="", flush=True)
                elif isinstance(ev, Waiting):
                    assert human is not None  # only a human participant waits for input
                    text = await loop.run_in_executor(None, input, f"\n[you] call {ev.call}> ")
                    human.submit(text)
                elif isinstance(ev, StepDone):
                    if single and ev.output and human is None:
                        print()
                    print(f"[{who}] call {ev.call}: {ev.outcome} ({ev.reward:+g}) {ev.feedback[:160]}")
                elif isinstance(ev, Finished):
                    print(f"[{who}] {ev.status}: success={ev.success} return={ev.episode_return:g}"
                          + (f" error={ev.error}" if ev.error else ""))
        finally:
            await pool.aclose()

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, EOFError):
        pool.wait_idle()
        print("\nstopped (the steps so far are stored)", file=sys.stderr)
        return 130
    pool.wait_idle()
    return 0
