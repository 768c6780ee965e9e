"""`iwu prepare`: a dataset resized into the training cache, with its class counts, or only checked
(iwu.data.prepare).
"""

from __future__ import annotations

import argparse

from iwu.commands.arguments import SIDE, COUNT, DATA_HELP, examples


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="cache a dataset resized for training and count its classes, or --check it",
                       epilog=examples("iwu prepare --data acdc:/data/acdc --check",
                                       "iwu prepare --data cityscapes:/data/cityscapes --size 768 --workers 8"))
    p.add_argument("--data", required=True, metavar="KIND:ROOT", help=DATA_HELP)
    p.add_argument("--size", type=SIDE, default=768, help="side of the square training images")
    p.add_argument("--split", default="train,val", help="comma-separated splits (default train,val)")
    p.add_argument("--check", action="store_true", help="only validate: list every problem, exit 1 if any")
    p.add_argument("--cache-dir", default=None, help="cache root (default $IWU_CACHE or ~/.cache/iwu)")
    p.add_argument("--workers", type=COUNT, default=2, help="processes decoding files")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cache even if it is up to date")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.data.prepare import run_prepare

    return run_prepare(
        args.data, size=args.size, splits=args.split, check=args.check, cache_dir=args.cache_dir,
        workers=args.workers, rebuild=args.rebuild,
    )
