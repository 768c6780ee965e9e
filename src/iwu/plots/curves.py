"""A run's training curves: read from Lightning's CSVLogger ``metrics.csv``, grouped into panels, drawn.

The CSV is sparse: every ``log`` call writes a row with only its own columns
filled (training loss on some steps, validation mIoU once per validation), so
each column is read as its own series of ``(step, value)`` pairs. `curve_panels`
groups them into panels with readable labels (loss, validation mIoU, learning
rate, uncertainty), and `curves_figure` draws the panels. The loss panel names the
run's loss (`loss_name`): the weighted modes' is on another scale than plain
cross-entropy.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from iwu.constants import ENSEMBLE
from iwu.errors import UserError
from iwu.plots import plain_text, save_png
from iwu.plots.colours import ENSEMBLE_COLOUR

# val/<model>/miou for the main validation set, val_<dataset>/<model>/miou for another
VAL_MIOU = re.compile(r"^(val[^/]*)/(.+)/miou$")
LR_PREFIX = "lr/"  # lr/<parameter group>: the learning rate of each member's parts (iwu.engine.optim.param_groups)
# the training loss of each built-in mode (iwu.method.modes), as the loss panel names it
def read_metrics(metrics_csv) -> dict[str, list[tuple[int, float]]]:
    """Every column except ``step`` as ``(step, value)`` pairs in file order, skipping empty cells.

    Cells that are not numbers are skipped too, and so is a last line without
    its newline: the logger may be writing it while we read.
    """
    path = Path(metrics_csv)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file (written by the run's CSV logger)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: unreadable metrics file ({' '.join(str(err).split())})") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines = lines[:-1] if len(lines) > 1 else lines  # keep a lone header line
    reader = csv.DictReader(lines)
    series: dict[str, list[tuple[int, float]]] = {c: [] for c in reader.fieldnames or () if c and c != "step"}
    for row in reader:
        step = _number(row.get("step"))
        if step is None or not math.isfinite(step):
            continue
        for column, pairs in series.items():
            value = _number(row.get(column))
            if value is not None:
                pairs.append((int(step), value))
    return series


def _number(cell) -> float | None:
    if cell is None or not str(cell).strip():
        return None
    try:
        return float(cell)
    except ValueError:
        return None


@dataclass(frozen=True)
class Series:
    """One logged column as a line: its readable label, and the finite values with their steps."""

    column: str
    label: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    model: str | None = None  # a validation curve's model, which keeps its colour across validation sets
    other_set: bool = False  # a validation set other than the training dataset's own


@dataclass(frozen=True)
class Panel:
    """One plot of the curves: what it shows, its series, and what to say when it has none."""

    title: str
    ylabel: str
    series: tuple[Series, ...]
    empty: str = ""
    log: bool = False  # a log scale: the values are positive and span decades
    score: bool = False  # a score in [0, 1], its axis from 0


# what training logs per step for modes weighted by uncertainty (iwu.engine.ensemble.log_uncertainty)
UNCERTAINTY_PANELS = (("train/most_uncertain_instance", "most uncertain instance", "per image, mean of a batch"),
                      ("train/pixel_entropy", "pixel entropy", "mean over pixels"),
                      ("train/instances_per_image", "instances per image", "predicted instances"))


def loss_name(mode: str | None) -> str:
    """What mode `mode` trains with (``uncertainty-weighted cross-entropy``), ``<mode> loss`` for a mode of
    one's own; ``loss`` when the mode is not known."""
    from iwu.method.modes import MODES

    if mode is None:
        return "loss"
    return MODES[mode].loss_name if mode in MODES else f"{mode} loss"


def curve_panels(metrics: dict[str, list[tuple[int, float]]], mode: str | None = None) -> list[Panel]:
    """The panels of a run's curves: training loss (named for `mode`, see `loss_name`) and validation
    mIoU always; the learning rate and the uncertainty statistics of uncertainty-weighted modes when
    they were logged."""
    series = {column: _series(column, pairs) for column, pairs in metrics.items()}
    logged = {column: s for column, s in series.items() if s.steps}
    losses = [s for c, s in logged.items() if c.startswith("train") and "loss" in c]
    panels = [Panel("training loss", loss_name(mode), tuple(losses), "no training loss logged yet",
                    log=_decades(losses)),
              Panel("validation mIoU", "mIoU", tuple(s for s in logged.values() if s.model), "no validation yet",
                    score=True)]
    rates = _merged([s for c, s in logged.items() if c.startswith(LR_PREFIX)])
    if rates:
        panels.append(Panel("learning rate", "learning rate", tuple(rates), log=_decades(rates)))
    for column, title, ylabel in UNCERTAINTY_PANELS:
        if column in logged:
            panels.append(Panel(f"{title} (training batches)", ylabel, (logged[column],)))
    return panels


def _decades(series: list[Series]) -> bool:
    """Whether the values are all positive and span a factor 10 or more: worth a log scale."""
    values = [v for s in series for v in s.values]
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


def _series(column: str, pairs: list[tuple[int, float]]) -> Series:
    kept = [(s, v) for s, v in pairs if math.isfinite(v)]
    steps, values = tuple(s for s, _ in kept), tuple(v for _, v in kept)
    match = VAL_MIOU.match(column)
    if match:
        split, model = match.groups()
        other = split != "val"
        label = f"{model} ({split.removeprefix('val_')})" if other else model
        return Series(column, label, steps, values, model=model, other_set=other)
    return Series(column, _label(column), steps, values)


def _label(column: str) -> str:
    """``train/loss`` -> ``mean of the members``, ``train/<member>/loss`` -> the member, ``lr/member0/head``
    -> ``member0 head``; anything else without its ``train/`` and with spaces for ``_`` and ``/``."""
    if column == "train/loss":
        return "mean of the members"
    parts = column.split("/")
    if len(parts) == 3 and parts[0] == "train" and parts[2] == "loss":
        return parts[1]
    if column.startswith(LR_PREFIX):
        return " ".join(parts[1:])
    return column.removeprefix("train/").replace("_", " ").replace("/", " ")


def _merged(series: list[Series]) -> list[Series]:
    """Series with the same values as one, labelled with all their names (members sharing a rate)."""
    by_values: dict[tuple, list[Series]] = {}
    for s in series:
        by_values.setdefault((s.steps, s.values), []).append(s)
    return [same[0] if len(same) == 1 else Series(same[0].column, ", ".join(s.label for s in same), *key)
            for key, same in by_values.items()]


# --- the figure ---------------------------------------------------------------------

COLUMNS = 3  # panels per row
FEW = 20  # series with at most this many points are drawn with markers: a lone point shows


def curves_figure(metrics: dict[str, list[tuple[int, float]]], title: str = "",
                  mode: str | None = None) -> Figure:
    """The panels of `curve_panels(metrics, mode)` side by side, three to a row, all on one step axis from 0.

    Validation curves: the ensemble thicker and in `ENSEMBLE_COLOUR`, validation sets other than the
    training dataset's dashed, each model keeping its colour across sets; mIoU from 0.
    """
    panels = curve_panels(metrics, mode)
    rows = -(-len(panels) // COLUMNS)
    columns = min(len(panels), COLUMNS)
    fig = Figure(figsize=(5 * columns, 4.2 * rows + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True).ravel()
    last = max((step for panel in panels for s in panel.series for step in s.steps), default=0)
    for ax, panel in zip(axes, panels):
        _draw(ax, panel)
        ax.set_xlim(0, max(last, 1) * 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.tick_params(labelbottom=True)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return plain_text(fig)


def _model_colours(series) -> dict[str, str]:
    """The ensemble in `ENSEMBLE_COLOUR`, the other models in the colour cycle, in order of appearance."""
    members = [m for m in dict.fromkeys(s.model for s in series if s.model) if m != ENSEMBLE]
    return {ENSEMBLE: ENSEMBLE_COLOUR, **{m: f"C{i % 10}" for i, m in enumerate(members)}}


def _draw(ax, panel: Panel) -> None:
    colors = _model_colours(panel.series)
    for s in panel.series:
        few = len(s.steps) <= FEW
        if s.model:
            ensemble = s.model == ENSEMBLE
            ax.plot(s.steps, s.values, label=s.label, color=colors[s.model], linestyle="--" if s.other_set else "-",
                    linewidth=2.6 if ensemble else 1.2, marker="o", markersize=5 if ensemble else 3,
                    zorder=3 if ensemble else 2)
        else:
            ax.plot(s.steps, s.values, label=s.label, linewidth=1.2, marker="o" if few else None, markersize=3)
    if not panel.series:
        ax.text(0.5, 0.5, panel.empty, transform=ax.transAxes, ha="center", va="center", color="0.4")
    elif panel.log:
        ax.set_yscale("log")
    if len(panel.series) > 1:
        ax.legend(fontsize="small")
    if panel.score and panel.series:
        top = max(v for s in panel.series for v in s.values)
        ax.set_ylim(0, min(1.0, top * 1.15 + 0.02))
    ax.set(title=panel.title, ylabel=panel.ylabel)
    ax.grid(True, alpha=0.3)


def save_curves(metrics_csv, path, title: str = "", mode: str | None = None) -> Path:
    """`curves_figure` of a run's ``metrics.csv`` written to `path` as a PNG, atomically; `mode`, the run's
    (``config.mode``), names its loss."""
    return save_png(curves_figure(read_metrics(metrics_csv), title, mode), path)
