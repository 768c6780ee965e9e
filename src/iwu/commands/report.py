"""`iwu report`: per-class tables over seeds from run directories (iwu.report)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import examples
from iwu.constants import ENSEMBLE


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="per-class tables over seeds (mean ± std, t-test) from run directories",
                       epilog=examples("iwu report runs/acdc_ensemble --paper table1 --out reports/acdc",
                                       "iwu report runs/demo --class-counts runs/demo/class_counts.json "
                                       "--format md,tex,csv --out reports/demo"))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding them at any depth")
    p.add_argument("--by", default=None, help="group columns by fields of mode, model, experiment, train, eval "
                                              "(default: mode, plus what differs)")
    p.add_argument("--member", default=ENSEMBLE, help="ensemble (default), a member name, or all")
    p.add_argument("--format", default="md", help="md, tex, csv, a comma-separated list, or all")
    p.add_argument("--out", default=None, help="folder for report.* and difference.png")
    p.add_argument("--paper", default=None, metavar="TABLE", help="put the published numbers beside (table1, table2, table3)")
    p.add_argument("--class-counts", default=None, metavar="JSON|KIND:ROOT",
                   help="the training set's class_counts.json, or the dataset as --data takes it (acdc:ROOT) once "
                        "iwu prepare has cached it; orders the figure by frequency")
    p.add_argument("--eval", default=None, metavar="DATASET",
                   help="only the scores on this validation set (e.g. cityscapes for a cross-domain column alone)")
    p.add_argument("--rare", type=int, default=None, metavar="K",
                   help="add a row: each run's mean IoU over the K classes rarest in training (needs --class-counts)")
    p.add_argument("--gap", action="store_true",
                   help="the learning curve of the gap instead of the table: two folders of runs (the baseline's, "
                        "then another mode's), their paired difference at every validation step with its 95%% "
                        "interval, mIoU and --rare's row, on every validation set (learning_gap.md and .png in --out)")
    p.add_argument("--segments", action="store_true",
                   help="the modes compared on how well uncertainty flags wrong segments instead of the IoU table: "
                        "AUROC of IoU = 0, R2 of the IoU (iwu evaluate --segments first; report_segments.md in --out)")
    p.add_argument("--percent", action="store_true", help="IoU x100 with one decimal")
    # the choices are iwu.report.stats.DDOF and TESTS, spelled out so the parser imports no numpy
    p.add_argument("--std", choices=["sample", "population"], default="sample",
                   help="standard deviation of the cells and error bars: sample (ddof=1, default) or "
                        "population (ddof=0, np.std as in the paper's scripts)")
    p.add_argument("--test", choices=["paired", "welch", "student"], default=None,
                   help="t-test of two columns: paired (on the per-seed differences; the default where both "
                        "columns hold the same seeds of one experiment), welch (unequal variances; the default "
                        "otherwise) or student (pooled, scipy.stats.ttest_ind(a, b) as in the paper's scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gap:
        from iwu.report.learning_gap import run_learning_gap

        return run_learning_gap(args.runs, out=args.out, class_counts=args.class_counts, rare=args.rare)
    if args.segments:
        from iwu.report.segments import run_segment_report

        return run_segment_report(args.runs, out=args.out, std=args.std, test=args.test, eval_set=args.eval)
    from iwu.report import run_report

    return run_report(args.runs, out=args.out, by=args.by, member=args.member, fmt=args.format, paper=args.paper,
                      class_counts=args.class_counts, percent=args.percent, std=args.std, test=args.test,
                      eval_set=args.eval, rare=args.rare)
