"""`iwu train`: one run from a config file (iwu.engine.train); prints the best ensemble mIoU and where
the run's final record is.
"""

from __future__ import annotations

import argparse

from iwu.commands.arguments import add_import_option, add_list_configs, examples


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model or an ensemble from a config file",
                       description="Train from CONFIG, a YAML file, with key=value pairs overriding its keys. "
                                   "Modes (mode=...): {modes}. Every key, its value, default and meaning: "
                                   "iwu config --show CONFIG [key=value ...].",
                       epilog=examples("iwu train configs/demo.yaml seed=3 out=runs/try",
                                       "iwu train configs/demo.yaml mode=standard trainer.max_steps=20",
                                       "iwu train configs/demo.yaml out=runs/try resume=true  # continue after a stop",
                                       "iwu config --show configs/demo.yaml mode=focal  # every key of that run"))
    p.add_argument("config", help="YAML run config (configs/paper/ has the paper's, configs/demo.yaml the demo)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="set a dotted config key to a YAML value; common: out=DIR (the run directory; default "
                        "runs/EXPERIMENT/MODE/seedN), seed=N, mode=MODE, resume=true (continue the run in out= from "
                        "its last checkpoint), trainer.max_steps=N, data.root=DIR, members.1.lr=5e-4 (a list item "
                        "by position); every key: iwu config --show CONFIG")
    add_import_option(p, "(recorded in the run; evaluate, predict, masks and export name it when it is needed, and import it only when given --import again) ")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (for logs)")
    add_list_configs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.config.schema import add_imports, load_config
    from iwu.models import import_user_modules
    from iwu.engine.progress import closing_line
    from iwu.engine.run_dir import FINAL, run_dir
    from iwu.engine.train import train

    import_user_modules(args.imports)  # before the config: its members may be theirs
    config = load_config(args.config, args.overrides)
    add_imports(config, args.imports)
    final = train(config, progress=args.progress)
    if line := closing_line(final, run_dir(config) / FINAL):  # rank 0 alone speaks for a multi-process run
        print(line)
    return 0
