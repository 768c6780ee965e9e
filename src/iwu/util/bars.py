"""Progress over files for the terminal: a live bar where someone watches, one line in a log.

A tqdm bar redraws itself with carriage returns; in a SLURM log or a redirected file every redraw
stays, so there a pass over a dataset says what it does in one line instead.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def watched() -> bool:
    """Whether stderr is a terminal (not a file or a pipe)."""
    return sys.stderr.isatty()


def bar(iterable, desc: str, unit: str, total: int | None = None):
    """`iterable` with a tqdm bar on a terminal, after one line (`desc: N unit`) elsewhere."""
    if watched():
        return tqdm(iterable, total=total, desc=desc, unit=unit)
    count = total if total is not None else len(iterable) if hasattr(iterable, "__len__") else "?"
    print(f"{desc}: {count} {unit}", file=sys.stderr, flush=True)
    return iterable
