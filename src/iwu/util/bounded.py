"""Bounds on what a shared file may expand to once read.

YAML aliases make a small file stand for a huge tree: twelve lines of nested
aliases are billions of values once anything walks them (a copy, a merge, a
comparison of configs), and an alias inside its own definition is a tree
without end. JSON nested thousands deep overflows Python's stack. Configs and
result files are exchanged between users, so each is checked once, right
after it is read, and refused in one line instead of hanging or crashing.
"""

from __future__ import annotations

from iwu.errors import UserError

MAX_VALUES = 100_000  # values (scalars, lists, mappings) a config or result file may hold, shared ones counted each time
MAX_DEPTH = 100  # lists and mappings nested in one another
# An image side: 4096 holds Cityscapes' 2048x1024 twice over; past it one probability map of 19 classes
# alone is over a gigabyte per member (a typo of a digit asked for 100000 and grew past 8 GB unannounced).
MAX_SIDE = 4096
# A name that becomes a folder, a figure title and a table cell (an experiment's): folder names end at 255
# bytes, and a title or a column of a thousand characters says nothing more than one of a hundred.
MAX_NAME = 120


class _Exceeded(Exception):
    pass


def check_bounded(data, where: str) -> None:
    """A UserError naming `where` if `data` refers to itself, holds more than MAX_VALUES values or nests
    deeper than MAX_DEPTH; the walk stops as soon as a bound is passed, so checking a bomb is cheap."""
    budget = [MAX_VALUES]
    try:
        _walk(data, 0, set(), budget)
    except _Exceeded as err:
        raise UserError(f"{where}: {err}; a config or result file should be a plain tree of a few "
                        "thousand values (are YAML aliases (&, *) nested in it?)") from None


def _walk(node, depth: int, ancestors: set[int], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _Exceeded(f"expands to more than {MAX_VALUES:,} values")
    if not isinstance(node, (dict, list)):
        return
    if depth >= MAX_DEPTH:
        raise _Exceeded(f"nests deeper than {MAX_DEPTH} levels")
    if id(node) in ancestors:
        raise _Exceeded("refers to itself")
    ancestors.add(id(node))
    for child in node.values() if isinstance(node, dict) else node:
        _walk(child, depth + 1, ancestors, budget)
    ancestors.discard(id(node))
