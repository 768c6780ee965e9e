"""`iwu weights`: the pretrained files a config's members read, whether the local caches hold them,
and --fetch to fill the caches (iwu.models.prefetch).

Exit status 1 when a file is missing and not fetched (and the config reads pretrained files at all).
"""

from __future__ import annotations

import argparse

from iwu.commands.arguments import add_import_option, add_list_configs, examples, import_modules


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list the pretrained files a config needs and where they go; --fetch them",
                       description="For every member of CONFIG: the pretrained weights files it reads, where "
                                   "the local cache keeps them ($TORCH_HOME for torchvision, the Hugging Face "
                                   "cache for smp and timm) and whether they are there. Runs never download; "
                                   "on a machine with internet, --fetch fills the caches to copy over. "
                                   "Exit 1 when a file is missing.",
                       epilog=examples("iwu weights configs/paper/acdc_ensemble.yaml",
                                       "iwu weights configs/paper/acdc_ensemble.yaml --fetch"))
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of config keys, as for train")
    p.add_argument("--fetch", action="store_true", help="download the missing files into the caches")
    add_import_option(p, "")
    add_list_configs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.config.schema import load_config
    from iwu.models.prefetch import fetch

    import_modules(args)
    config = load_config(args.config, args.overrides)
    _check_members(config)
    files = _list_files(config.members)
    if not config.model.pretrained:
        print("model.pretrained is false: a run of this config reads none of these files (its members start "
              "from random weights)")
        return 0
    if args.fetch:
        fetch(files)
        print(f"fetched {sum(not f.present for f in files)} file(s); copy the caches to machines without internet")
        return 0
    return 1 if any(not f.present for f in files) else 0


def _check_members(config) -> None:
    """Refuse a member a run would refuse (an unknown architecture, encoder or builder), as train does: built
    on the meta device, so no memory is spent and nothing is read."""
    import torch

    from iwu.models import build_model

    with torch.device("meta"):
        for m in config.members:
            build_model(m.name, 2, output_stride=config.model.output_stride, pretrained=False, args=m.args)


def _list_files(members) -> list:
    """Print each member's pretrained files (or that none are known) and return them all, in member order."""
    from iwu.models.prefetch import member_weights

    files = []
    for m in members:
        needed = member_weights(m.name, m.args)
        files += needed
        for f in needed or [None]:
            state = "no pretrained files known" if f is None else ("present" if f.present else "MISSING")
            print(f"{m.name}: {state}" + (f"  {f.source} -> {f.path}" if f else ""))
    return files
