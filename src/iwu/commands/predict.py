"""`iwu predict`: segmentation and uncertainty maps of images (iwu.inference.prediction)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import (SIDE, DEVICE_HELP, RUN_HELP, add_import_option, add_overwrite_option, examples,
                                    import_modules)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segmentation and uncertainty maps for images",
                       description="For each image, <name>_seg.png (colours of the classes), _entropy.png, "
                                   "_instance.png (the uncertainty of each predicted instance) and _overlay.png in "
                                   "--out.",
                       epilog=examples("iwu predict runs/demo/instance_uncertainty/seed0 photos/ --out maps"))
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT", help=RUN_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders searched at any depth (png, jpg, bmp, tif, webp)")
    p.add_argument("--out", required=True, help="folder for the PNGs, outside the images' folders")
    add_overwrite_option(p, "PNGs")
    p.add_argument("--size", type=SIDE, default=None, help="side the ensemble sees (default: training size)")
    p.add_argument("--panel", action="store_true",
                   help="one figure per image, <stem>_panel.png: the image, segmentation and uncertainty side by "
                        "side (instead of the four maps)")
    p.add_argument("--segments", metavar="DATASET", default=None,
                   help="with --panel: outline the segments the meta classifier of `iwu evaluate --segments` on "
                        "DATASET (as in eval_<DATASET>.json) flags as wrong, with their probability")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    add_import_option(p, "")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_modules(args)  # runs record theirs, but only what the user names here is imported
    from iwu.inference.prediction import run_predict

    return run_predict(args.run, args.images, args.out, size=args.size, device=args.device,
                       overwrite=args.overwrite, panel=args.panel, segments=args.segments)
