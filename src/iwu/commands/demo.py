"""`iwu demo`: the method against plain cross-entropy on the built-in synthetic data (iwu.sweep.demo)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import POSITIVE, examples


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the method against plain cross-entropy on built-in synthetic data (CPU, minutes)",
                       description="Trains the demo config (iwu/configs/demo.yaml) in standard and "
                                   "instance_uncertainty modes and prints their per-class IoU side by side.",
                       epilog=examples("iwu demo", "iwu demo --seeds 1 trainer.max_steps=100 --out runs/quick"))
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo config, e.g. "
                   "trainer.max_steps=100")
    p.add_argument("--out", default="runs/demo", help="folder for the data, the runs, the figure and the numbers")
    p.add_argument("--seeds", type=POSITIVE, default=2, help="seeds per mode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.sweep.demo import run_demo

    return run_demo(out=args.out, seeds=args.seeds, overrides=args.overrides)
