"""`iwu export`: a run's members and ensemble as ONNX or TorchScript files (iwu.interop.export)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import SIDE, RUN_HELP, add_import_option, add_overwrite_option, examples, import_modules


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a run's members and ensemble as ONNX or TorchScript files, for deployment",
                       description="Writes each member (normalised images -> logits) and the ensemble (-> mean "
                                   "softmax) to RUN/export/ (or --out), traced at --size with any batch size, "
                                   "and checks each file's outputs against PyTorch's; export.json beside them holds "
                                   "the classes, the normalisation and the size a deployer needs.",
                       epilog=examples("iwu export runs/demo/instance_uncertainty/seed0",
                                       "iwu export RUN --format torchscript --size 512 --out deploy"))
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT", help=RUN_HELP)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="file format")
    p.add_argument("--out", default=None, help="folder for the files (default: RUN/export)")
    p.add_argument("--size", type=SIDE, default=None, help="image side traced (default: the training size)")
    add_overwrite_option(p, "files of the same names that an export did not write")
    add_import_option(p, "")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.interop.export import export_run

    import_modules(args)
    export_run(args.run, args.format, out=args.out, size=args.size, overwrite=args.overwrite)
    return 0
