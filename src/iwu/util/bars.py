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


class Tally:
    """Things that end one by one (the runs of a sweep): a tqdm bar with the failures counted where stderr
    is a terminal and `enabled`; elsewhere, when `enabled`, a line per ended thing on stdout (a log file
    keeps every redraw of a bar); nothing when not."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = self.failed = 0
        self.bar = tqdm(total=total, desc=desc, unit=unit) if enabled and watched() else None

    def ended(self, name: str, state: str) -> None:
        self.done += 1
        self.failed += state == "failed"
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(failed=self.failed)
        elif self.enabled:
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ended: {name} {state}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
