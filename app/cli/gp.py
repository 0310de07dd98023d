"""`sftvsrl gp …`: deal, solve, check and score GeneralPoints hands from the command line."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("gp", help="GeneralPoints: deal, solve, check, score")
    p.set_defaults(func=lambda args: p.print_help())
    p.add_subparsers(dest="gp_command", metavar="COMMAND")
