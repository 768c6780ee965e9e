"""What the commands' parsers share: argument types, help texts, options several commands take.

Light on purpose (no torch): every parser is built from it for `iwu --help`. Help texts may say
{kinds} and {modes}; `fill_lists` puts in the registered dataset kinds and training modes when help
is printed.
"""

from __future__ import annotations

import argparse
import importlib
import math

from iwu.commands.pipe import reader_gone
from iwu.util.bounded import MAX_SIDE


def whole(minimum: int, maximum: int | None = None):
    """An argparse type for whole numbers in [minimum, maximum], so a bad count is argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is above {maximum}")
        return value

    parse.__name__ = f"whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    return parse


def finite(text: str) -> float:
    """An argparse type for a finite number (float() also takes nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


finite.__name__ = "finite number"
COUNT, POSITIVE, SIDE = whole(0), whole(1), whole(16, MAX_SIDE)

# Filled in only when help is printed: the modes' module imports torch, and a test (or a user's module)
# may register a kind or a mode after the parser is built.
_REGISTRY_LISTS = {
    "{kinds}": lambda: ", ".join(importlib.import_module("iwu.data.kinds").KINDS),
    "{modes}": lambda: ", ".join(importlib.import_module("iwu.method.modes").MODES),
}
DATA_HELP = "the dataset, KIND:ROOT with KIND one of {kinds}; acdc:ROOT:fog,night keeps only those conditions"
DEVICE_HELP = "cpu, cuda, cuda:1 (default: cuda when present)"
RUN_HELP = ("a run directory (its best ensemble), a run's .ckpt (best_ensemble.ckpt, last.ckpt) or one member's "
            "best_<member>.pt")
SPLIT_HELP = "which split of the dataset, e.g. train, val or test"


def fill_lists(text: str | None) -> str | None:
    """`text` with {kinds} and {modes} replaced by the registered names, comma-separated."""
    for placeholder, names in _REGISTRY_LISTS.items():
        if text and placeholder in text:
            text = text.replace(placeholder, names())
    return text


def examples(*lines: str) -> str:
    """An epilog of example command lines (the help formatter keeps their indented lines as written)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_import_option(p: argparse.ArgumentParser, what: str) -> None:
    """--import MODULE (repeatable, into args.imports); `what` says what else it does, ending in a space."""
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help=f"import a Python module first, e.g. one that registers your models {what}(repeatable)")


def add_overwrite_option(p: argparse.ArgumentParser, what: str) -> None:
    """--overwrite: replace `what` already at the output names; without it the command refuses."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} already at the output names "
                                                            "(default: refuse)")


class ListConfigs(argparse.Action):
    """Print the configs that ship with iwu and exit, as --help does: no CONFIG needed."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from iwu.config.packaged import packaged_config_names, packaged_configs_dir

        names, folder = packaged_config_names(), packaged_configs_dir()
        width = max(map(len, names))
        try:
            print("\n".join(f"{name:<{width}}  {folder / name}.yaml" for name in names), flush=True)
        except BrokenPipeError:
            parser.exit(reader_gone())
        parser.exit()


def add_list_configs(p: argparse.ArgumentParser) -> None:
    """--list-configs, for a command whose CONFIG may name a packaged config."""
    p.add_argument("--list-configs", action=ListConfigs, help="list the configs that ship with iwu and exit; "
                   "CONFIG may name one instead of a file, e.g. paper/acdc_ensemble")


def import_modules(args: argparse.Namespace) -> None:
    """Import the modules given with --import (they may register models, modes, kinds)."""
    from iwu.models import import_user_modules

    import_user_modules(args.imports)
