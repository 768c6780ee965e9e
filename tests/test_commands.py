"""The commands' package: one module a command, each with add(sub) and run(args), light at import, and
none importing the `iwu` parser that lists them."""

import argparse
import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import iwu.commands
from iwu.cli import COMMANDS, build_parser

PACKAGE = Path(iwu.commands.__file__).parent
SHARED = {"arguments", "pipe"}  # what the command modules share; no command of their own
COMMAND_MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.name not in SHARED)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_module_is_listed_once_and_in_the_help_order():
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in COMMANDS) == COMMAND_MODULES
    assert list(_subparsers()) == ["train", "config", "sweep", "evaluate", "predict", "masks", "import", "export",
                                   "weights", "report", "demo", "synth", "prepare"]


def test_each_command_runs_its_own_module():
    names = {"import": "import_published"}  # `import` is a keyword
    for name, parser in _subparsers().items():
        module = importlib.import_module(f"iwu.commands.{names.get(name, name)}")
        assert callable(module.add), name
        assert parser.get_default("func") is module.run, name


def test_no_command_module_imports_the_cli():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "iwu.cli" or n.startswith("iwu.cli.") for n in names), path.name


def test_building_the_parser_imports_nothing_heavy():
    """The table of dataset kinds (iwu.data.kinds) is read for the help; the readers are not."""
    code = ("import sys, iwu.cli; iwu.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'lightning', 'numpy', 'iwu.engine', 'iwu.inference', 'iwu.data.sources') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
