"""The `sftvsrl` command line: one parser, with one sub-command group per module in this package.

Each group module exposes `register(subparsers)`; handlers return an exit code. Bad input raises
`CliError`, which prints one line on stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftvsrl",
        description="SFT-vs-RL playground: GeneralPoints and V-IRL engines, models and app.",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in _groups():
        module.register(sub)
    return parser


def _groups():
    from . import gp

    groups = [gp]
    for name in ("virl", "models_cmd", "train", "serve", "eval_cmd", "episodes_cmd", "play_cmd"):
        try:
            groups.append(__import__(f"{__name__}.{name}", fromlist=["register"]))
        except ModuleNotFoundError as exc:  # group not built yet
            if exc.name != f"{__name__}.{name}":
                raise
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"sftvsrl: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
