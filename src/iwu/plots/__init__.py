"""Figures, each drawn on a bare `matplotlib.figure.Figure` (no pyplot, no backend switch).

Every figure has a function that builds it and returns the `Figure`, so a test
can read what it shows (bar heights, series, colours) before anything is saved,
and a `save_*` function that writes it as a PNG atomically.
Every figure function returns through `plain_text`: the names it shows come from users
and are drawn as typed.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter, FuncFormatter

from iwu.util.atomic_files import atomic_write_bytes


def save_png(fig, path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def plain_text(fig):
    """`fig`, with every string it holds drawn as typed: no mathtext, no TeX.

    Experiment, mode, class and file names come from users, and a ``$`` or ``\\`` in one is a
    character, not markup (``$\\input{x}$`` or a lone ``$`` would make matplotlib raise). Only what a
    tick formatter writes when the figure is drawn (numbers; 10^k on a log axis) keeps mathtext; tick
    labels given as names (``set_xticks(xs, names)``, which matplotlib formats with a `FixedFormatter`
    or a `FuncFormatter` holding them) are plain too. Call it once, when the figure holds all its texts.
    """
    formatted = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not isinstance(axis.get_major_formatter(), (FixedFormatter, FuncFormatter)):
                formatted.add(id(axis.offsetText))
                formatted.update(id(label) for tick in (*axis.majorTicks, *axis.minorTicks)
                                 for label in (tick.label1, tick.label2))
    for text in fig.findobj(Text):
        if id(text) in formatted:
            continue
        text.set_usetex(False)
        if text.get_wrap():
            # matplotlib measures a line to wrap as mathtext whenever it holds two `$`, whatever
            # parse_math says; escaped, a `$` is measured as plain text and drawn as itself
            text.set_text(text.get_text().replace("$", r"\$"))
        else:
            text.set_parse_math(False)
    return fig


def run_title(config, shown: str = "") -> str:
    """``<experiment> / <mode> / seed <seed>`` from a run's config, then ``: <shown>``, what a figure shows of it
    (``ensemble on cityscapes/val``)."""
    run = f"{config.experiment} / {config.mode} / seed {config.seed}"
    return f"{run}: {shown}" if shown else run
