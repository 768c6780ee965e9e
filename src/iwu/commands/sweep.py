"""`iwu sweep`: many runs of a config, seeds x modes x override values, here or on SLURM (iwu.sweep)."""

from __future__ import annotations

import argparse

from iwu.commands.arguments import COUNT, POSITIVE, add_import_option, add_list_configs, examples


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="many runs of a config (seeds x modes x override values), here or on SLURM",
                       description="Trains every point of seeds x modes x the values of each key=a,b override, "
                                   "one `iwu train` run each under out=DIR (default runs/<experiment>); runs that "
                                   "finished are skipped and the others resume, so the same command finishes an "
                                   "interrupted sweep. Then: iwu report DIR.",
                       epilog=examples("iwu sweep configs/demo.yaml --seeds 3 out=runs/sweep --dry-run",
                                       "iwu sweep configs/demo.yaml --seeds 0-4 --modes standard,focal "
                                       "members.0.lr=1e-3,1e-4 --parallel 2"))
    p.add_argument("config", help="YAML run config (keys: iwu config --show CONFIG)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides for every run; key=a,b makes an axis of the sweep; out=DIR puts it there")
    p.add_argument("--seeds", required=True, help="a count (30: seeds 0-29), a range (10-19) or a list (0,4,7)")
    p.add_argument("--modes", default="standard,instance_uncertainty",
                   help="comma-separated training modes, of: {modes}")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: processes on this machine; slurm: a job array through submitit")
    p.add_argument("--parallel", type=POSITIVE, default=None,
                   help="runs at once (local, default 1), or the most jobs of the array running at once "
                        "(slurm, default all of them)")
    add_import_option(p, "(each run records it) ")
    p.add_argument("--dry-run", action="store_true", help="only list the runs and what would be done to each")
    slurm = p.add_argument_group("slurm (default: the config's slurm section)")
    slurm.add_argument("--partition", default=None, help="the cluster's partition for the jobs")
    slurm.add_argument("--account", default=None, help="the account charged for the jobs")
    slurm.add_argument("--gpus-per-job", type=COUNT, default=None,
                       help="GPUs of each run (default 1; 0 on a partition without GPUs)")
    slurm.add_argument("--time", default=None, help="time limit of each job, e.g. 24:00:00 or 2-00:00:00; "
                                                    "a run past it is requeued (3 times) and resumes from its "
                                                    "last validation; a limit too short to train before SLURM's stop "
                                                    "signal (90 s ahead) is refused")
    add_list_configs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.sweep import run_sweep

    options = {"partition": args.partition, "account": args.account, "gpus_per_job": args.gpus_per_job,
               "time": args.time}
    return run_sweep(args.config, seeds=args.seeds, modes=args.modes, overrides=args.overrides,
                     launcher=args.launcher, parallel=args.parallel, imports=args.imports, slurm_options=options,
                     dry_run=args.dry_run)
