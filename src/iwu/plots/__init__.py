"""Figures, each drawn on a bare `matplotlib.figure.Figure` (no pyplot, no backend switch).

Every figure has a function that builds it and returns the `Figure`, so a test
can read what it shows (bar heights, series, colours) before anything is saved,
and a `save_*` function that writes it as a PNG atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from iwu.util.atomic_files import atomic_write_bytes


def save_png(fig, path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def run_title(config, shown: str = "") -> str:
    """``<experiment> / <mode> / seed <seed>`` from a run's config, then ``: <shown>``, what a figure shows of it
    (``ensemble on cityscapes/val``)."""
    run = f"{config.experiment} / {config.mode} / seed {config.seed}"
    return f"{run}: {shown}" if shown else run
