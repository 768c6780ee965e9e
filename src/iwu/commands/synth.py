"""`iwu synth`: synthetic scenes in a dataset's layout (iwu.data.synthetic)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import SIDE, COUNT, POSITIVE, examples
from iwu.data.kinds import SYNTHETIC_LAYOUTS


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic street scenes in the Cityscapes or ACDC layout "
                                     "(or small Kvasir-SEG / Pascal VOC fakes)",
                       epilog=examples("iwu synth --out data/synth",
                                       "iwu synth --out data/synth_acdc --layout acdc --n-train 40 --size 384"))
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier synth output of the "
                                                "same layout and seed, which is replaced)")
    p.add_argument("--layout", choices=SYNTHETIC_LAYOUTS, default="cityscapes",
                   help="folder and file names of that dataset, so --data LAYOUT:OUT reads them")
    p.add_argument("--n-train", type=COUNT, default=20, help="training images (acdc: spread over the four conditions)")
    p.add_argument("--n-val", type=COUNT, default=5, help="validation images")
    p.add_argument("--size", type=SIDE, default=256, help="image width in pixels")
    p.add_argument("--height", type=POSITIVE, default=None, help="image height (default: half the width)")
    p.add_argument("--seed", type=COUNT, default=0, help="same seed, same bytes")
    p.add_argument("--train-ids", action="store_true", help="cityscapes: also write *_gtFine_labelTrainIds.png")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier synthetic set of another layout or seed at --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.data.synthetic import write_synthetic

    root = write_synthetic(
        args.out, layout=args.layout, n_train=args.n_train, n_val=args.n_val, size=args.size,
        height=args.height, seed=args.seed, write_train_ids=args.train_ids, force=args.force,
    )
    print(f"wrote {args.n_train} train and {args.n_val} val {args.layout} scenes to {root}")
    return 0
