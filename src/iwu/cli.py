"""The `iwu` command.

Parsers are built here, with no heavy imports, so `iwu --help` is instant;
each command imports its module only when it runs. A `UserError` anywhere
below becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from iwu.errors import UserError


def _run_demo(args: argparse.Namespace) -> int:
    from iwu.demo import run_demo

    return run_demo(out=args.out, steps=args.steps, size=args.size, seed=args.seed)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the method on built-in synthetic data (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="folder for the figure and numbers")
    p.add_argument("--steps", type=int, default=30, help="training steps of the ensemble")
    p.add_argument("--size", type=int, default=96, help="side of the square synthetic images")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iwu",
        description="Instance-wise uncertainty training for class-imbalanced semantic segmentation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"iwu {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iwu {args.command}: interrupted", file=sys.stderr)
        return 130
