"""`iwu import`: the published code's checkpoints as run directories (iwu.interop.published).

The module is not named after its command: `import` is a Python keyword.
"""

from __future__ import annotations

import argparse

from iwu.commands.arguments import SIDE, COUNT, examples
from iwu.data.kinds import TABLE


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="checkpoints of the published code as run directories (evaluate, predict, "
                                      "masks, report)",
                       description="Files named best_<model>_<dataset>_os<16|8>_seed<k>[_<tag>].pth that share "
                                   "dataset, output stride, seed and tag become one run (an ensemble when several): "
                                   "OUT/<mode>/seed<k>/. The mode is instance_uncertainty for the method's tag "
                                   "(uncertainty_instance_ensembling), standard otherwise.",
                       epilog=examples("iwu import checkpoints/best_*_cityscapes_os16_seed*.pth --out runs/published",
                                       "iwu import old.pth --each --dataset acdc --seed 3 --out runs/published"))
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="the published .pth files (dicts with model_state)")
    p.add_argument("--out", required=True, help="folder for the run directories")
    p.add_argument("--each", action="store_true", help="one run per file (OUT/<mode>/<model>/seed<k>/)")
    # iwu.config.schema.Mode, spelled out so the parser imports nothing heavy
    p.add_argument("--mode", default=None, help="how the networks were trained, one of {modes} "
                                                 "(default: from the file names' tag)")
    known = ", ".join(kind.name for kind in TABLE if kind.fixed_classes)
    p.add_argument("--dataset", default=None, help=f"the dataset they were trained on, for files named otherwise "
                                                   f"({known}; another with --classes)")
    p.add_argument("--output-stride", type=int, choices=[8, 16], default=None, help="default: from the names, or 16")
    p.add_argument("--seed", type=COUNT, default=None, help="default: from the names, or 0")
    p.add_argument("--classes", default=None, help="class names in train-id order, comma-separated "
                                                   "(default: Cityscapes' 19 for cityscapes and acdc)")
    p.add_argument("--experiment", default="published", help="experiment name in reports")
    p.add_argument("--size", type=SIDE, default=768, help="image side for evaluate, predict and masks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.interop.published import import_published

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    runs = import_published(args.checkpoints, args.out, each=args.each, mode=args.mode, dataset=args.dataset,
                            output_stride=args.output_stride, seed=args.seed, classes=classes,
                            experiment=args.experiment, size=args.size)
    print(f"imported {len(runs)} run{'s' * (len(runs) != 1)}; next: iwu evaluate RUN --data KIND:ROOT, "
          f"then iwu report {args.out}")
    return 0
