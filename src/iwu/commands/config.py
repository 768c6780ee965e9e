"""`iwu config --show`: a run config as a run would use it, every key with its meaning and default
(iwu.config.doc), or plain YAML.
"""

from __future__ import annotations

import argparse

from iwu.commands.arguments import ListConfigs, add_import_option, examples, import_modules


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="a run config as a run would use it: every key, its value, default and meaning",
                       description="Prints CONFIG with the overrides applied and every key included, as YAML "
                                   "with each key's meaning, and its default where the value differs, as a comment. "
                                   "The output is a config file that iwu train reads.",
                       epilog=examples("iwu config --show configs/demo.yaml seed=3",
                                       "iwu config --show configs/demo.yaml mode=standard --yaml > my.yaml"))
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--show", metavar="CONFIG", help="the YAML run config to print: a file, or the name of "
                        "one that ships with iwu, e.g. paper/acdc_ensemble")
    action.add_argument("--list-configs", action=ListConfigs, help="list the configs that ship with iwu and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of config keys, as for train")
    p.add_argument("--yaml", action="store_true", help="plain YAML, without the comments")
    add_import_option(p, "")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iwu.config.schema import add_imports, config_yaml, load_config
    from iwu.config.doc import show_config

    if args.imports:
        import_modules(args)  # before the config: its mode and members may be theirs
    config = load_config(args.show, args.overrides)
    add_imports(config, args.imports)
    if args.yaml:
        print(config_yaml(config), end="")
    else:
        print(f"# {' '.join([args.show, *args.overrides])}: every key; after it, its meaning and, where the "
              "value differs, its default")
        print(show_config(config), end="")
    return 0
