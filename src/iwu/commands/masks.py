"""`iwu masks`: a trained ensemble's instance-uncertainty masks stored for mode=offline_masks
(iwu.inference.mask_writing).
"""

from __future__ import annotations

import argparse

from iwu.commands.arguments import (SIDE, COUNT, POSITIVE, DATA_HELP, DEVICE_HELP, SPLIT_HELP, add_import_option,
                                    add_overwrite_option, examples, import_modules)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("masks", help="store a trained ensemble's instance-uncertainty masks for offline_masks",
                       description="Writes the ensemble's instance-uncertainty mask of every image of the split, "
                                   "so that a single model can train with them (mode=offline_masks) without the "
                                   "ensemble.",
                       epilog=examples("iwu masks runs/acdc/instance_uncertainty/seed0 --data acdc:/data/acdc "
                                       "--out masks/acdc",
                                       "iwu train configs/paper/acdc_resnet101.yaml mode=offline_masks "
                                       "loss.masks_dir=masks/acdc"))
    p.add_argument("run", metavar="RUN_DIR", help="the trained ensemble's run directory")
    p.add_argument("--data", required=True, metavar="KIND:ROOT", help=DATA_HELP)
    p.add_argument("--out", required=True, help="mask folder, outside the dataset (then: mode=offline_masks "
                                                "loss.masks_dir=DIR); an earlier mask folder is added to")
    add_overwrite_option(p, "files in a folder that holds no masks")
    p.add_argument("--split", default="train", help=SPLIT_HELP)
    p.add_argument("--size", type=SIDE, default=None, help="image side (default: the run's training size)")
    p.add_argument("--batch-size", type=POSITIVE, default=1, help="images per forward pass (same masks)")
    p.add_argument("--workers", type=COUNT, default=0, help="processes decoding images")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    add_import_option(p, "")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_modules(args)  # runs record theirs, but only what the user names here is imported
    from iwu.inference.mask_writing import run_masks

    return run_masks(args.run, args.data, args.out, split=args.split, size=args.size,
                     batch_size=args.batch_size, workers=args.workers, device=args.device,
                     overwrite=args.overwrite)
