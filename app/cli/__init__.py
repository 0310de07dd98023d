"""The `sftvsrl` command line: one parser, with one sub-command group per module in this package.

Each group module exposes `register(subparsers)`; handlers return an exit code. Bad input raises
`CliError`, which prints one line on stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import CliError  # first: `train` still imports CliError from this package, not from .errors
from . import episodes_cmd, eval_cmd, gp, models_cmd, play_cmd, serve, train, virl

# The command groups, in the order `sftvsrl --help` lists them.
GROUPS = (gp, virl, models_cmd, train, serve, eval_cmd, episodes_cmd, play_cmd)

__all__ = ["CliError", "GROUPS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftvsrl",
        description="SFT-vs-RL playground: GeneralPoints and V-IRL engines, models and app.",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in GROUPS:
        module.register(sub)
    return parser


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
