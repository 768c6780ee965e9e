"""`iwu evaluate`: a run's members and ensemble scored on a dataset split (iwu.inference.evaluation)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import (SIDE, COUNT, POSITIVE, DATA_HELP, DEVICE_HELP, RUN_HELP, SPLIT_HELP,
                                    add_import_option, add_overwrite_option, examples, finite, import_modules)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a run's members and ensemble on any dataset, with uncertainty quality",
                       description="Per-class IoU of every member and of the ensemble, and how well the ensemble's "
                                   "uncertainty finds its errors, written to RUN/eval_<dataset>.json and printed.",
                       epilog=examples("iwu evaluate runs/demo/instance_uncertainty/seed0 "
                                       "--data cityscapes:runs/demo/data",
                                       "iwu evaluate RUN --data acdc:/data/acdc:fog,night --native --device cuda"))
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT", help=RUN_HELP)
    p.add_argument("--data", required=True, metavar="KIND:ROOT", help=DATA_HELP)
    p.add_argument("--split", default="val", help=SPLIT_HELP)
    p.add_argument("--size", type=SIDE, default=None, help="image side (default: the run's training size)")
    p.add_argument("--batch-size", type=POSITIVE, default=1, help="images per forward pass (same numbers)")
    p.add_argument("--workers", type=COUNT, default=0, help="processes decoding images")
    p.add_argument("--native", action="store_true",
                   help="score (and save) at each label's own resolution: the model sees --size, its logits are "
                        "upsampled to the label (benchmark numbers; eval_<dataset>-native.json)")
    p.add_argument("--uncertainty-threshold", type=finite, default=None,
                   help="PAvPU's threshold (default: the mean patch uncertainty of the split)")
    p.add_argument("--save-predictions", metavar="DIR", default=None,
                   help="also write the ensemble's predictions as PNGs (Cityscapes: labelIds); a folder "
                        "outside the dataset")
    p.add_argument("--segments", action="store_true",
                   help="also gather every predicted segment's uncertainty and geometry features and its IoU "
                        "(RUN/segments_<dataset>.csv), and say how well they flag wrong segments: AUROC of "
                        "IoU = 0 and R2 of the IoU, cross-validated by image (the eval file's `segments`, "
                        "RUN/segments_<dataset>.png)")
    add_overwrite_option(p, "prediction PNGs")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    add_import_option(p, "")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_modules(args)  # runs record theirs, but only what the user names here is imported
    from iwu.inference.evaluation import run_evaluate

    return run_evaluate(args.run, args.data, split=args.split, size=args.size, batch_size=args.batch_size,
                        workers=args.workers, uncertainty_threshold=args.uncertainty_threshold,
                        save_predictions=args.save_predictions, device=args.device, overwrite=args.overwrite,
                        native=args.native, segments=args.segments)
