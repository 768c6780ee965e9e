"""The `iwu` command.

The parser is built here from the commands' modules (iwu.commands, one module a command, in the order
`iwu --help` lists them), with no heavy imports, so `iwu --help` is instant; each command imports what
it needs only when it runs. A `UserError` anywhere below becomes one line on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys

from iwu import __version__
from iwu.commands import (config, demo, evaluate, export, import_published, masks, predict, prepare, report, sweep,
                          synth, train, weights)
from iwu.commands.arguments import fill_lists
from iwu.commands.pipe import reader_gone
from iwu.errors import Stopped, UserError

COMMANDS = (train, config, sweep, evaluate, predict, masks, import_published, export, weights, report, demo, synth,
            prepare)


class _Formatter(argparse.HelpFormatter):
    """Text wraps, but lines indented by two spaces (examples) stay as written; an option's default is shown
    unless its help says it or it is nothing (None, a flag's, an empty list)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        wrap = super()._fill_text
        lines = text.splitlines()
        return "\n".join(indent + line if line.startswith("  ") else wrap(line, width, indent) for line in lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        if (not action.option_strings or "default" in text or default is None or isinstance(default, bool)
                or default == [] or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """A parser (its subcommands' too) whose help lists the registries as they are when it is printed."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        self.description, self.epilog = fill_lists(self.description), fill_lists(self.epilog)
        for action in self._actions:
            action.help = fill_lists(action.help)
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="iwu",
        description="Instance-wise uncertainty training for class-imbalanced semantic segmentation.",
        epilog="iwu COMMAND --help: a command's arguments, with examples. iwu config --show CONFIG: every key of a "
               "run config, with its meaning.",
    )
    parser.add_argument("--version", action="version", version=f"iwu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add(sub)
    return parser


_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value pairs may follow options too (`iwu sweep CONFIG --seeds 3 key=value`), which argparse's
    # positional list cannot take once an option has come between
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"iwu {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Stopped as err:
        # on a terminal the live bar's line is still open: the message starts a line of its own
        print(f"{chr(10) if sys.stderr.isatty() else ''}iwu {args.command}: {err}", file=sys.stderr)
        return err.status
    except BrokenPipeError:
        return reader_gone()
    except OSError as err:
        if err.errno not in _PATH_ERRNOS or not err.filename:
            raise
        # where the user sent output or input: a read-only folder, a file where a folder belongs, ...
        print(f"iwu {args.command}: error: {err.filename}: {err.strerror}; choose another path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iwu {args.command}: interrupted", file=sys.stderr)
        return 130
