"""iwu.plots.forest: every group's difference from a baseline, its interval and significance, a panel per measure."""

import math

import pytest
from matplotlib.colors import to_rgba

from iwu.plots.difference import HIGHER, LOWER, NOT_SIGNIFICANT
from iwu.plots.forest import MIN_LIMIT, SPAN, Forest, ForestPanel, forest_figure, save_forest

NAN = math.nan
FOREST = Forest(
    names=("method (5)", "wide (2)", "unscored (2)"),
    panels=(
        ForestPanel("mIoU", diffs=(-0.02, 0.01, NAN), intervals=((-0.03, -0.01), (-0.5, 0.6), (NAN, NAN)),
                    significant=(True, False, False)),
        ForestPanel("5 rarest", diffs=(0.04, -0.03, NAN), intervals=((0.035, 0.045), (NAN, NAN), (NAN, NAN)),
                    significant=(True, False, False)),
    ),
    title="Every mode against standard", xlabel="IoU difference",
    legend=("higher", "lower", "not significant", "95% CI"),
)


def points(ax) -> dict[float, tuple[float, tuple]]:
    """The panel's differences by row (y): x and colour."""
    return {line.get_ydata()[0]: (line.get_xdata()[0], to_rgba(line.get_color()))
            for line in ax.lines if line.get_marker() == "o"}


def test_each_group_is_a_row_with_its_difference_coloured_by_sign_where_significant():
    fig = forest_figure(FOREST)
    first, second = [ax for ax in fig.axes if ax.get_title()]
    assert [t.get_text() for t in first.get_yticklabels()] == list(FOREST.names)
    assert list(first.get_yticks()) == [2, 1, 0]  # the first group on top
    assert points(first) == {2: (-0.02, to_rgba(LOWER)), 1: (0.01, to_rgba(NOT_SIGNIFICANT))}  # NaN: no point
    assert points(second) == {2: (0.04, to_rgba(HIGHER)), 1: (-0.03, to_rgba(NOT_SIGNIFICANT))}
    assert (first.get_title(), second.get_title()) == ("mIoU", "5 rarest")


def test_the_panels_share_the_widest_scale_and_an_interval_past_it_is_cut_with_arrows():
    fig = forest_figure(FOREST)
    first, second = [ax for ax in fig.axes if ax.get_title()]
    limit = max(MIN_LIMIT, SPAN * 0.04)  # the largest |difference| of any panel
    assert first.get_xlim() == pytest.approx((-limit, limit)) and second.get_xlim() == first.get_xlim()
    segments = sorted((tuple(s[:, 1]), tuple(s[:, 0])) for whiskers in first.collections
                      for s in whiskers.get_segments())
    assert segments == [((1, 1), pytest.approx((-limit, limit))), ((2, 2), pytest.approx((-0.03, -0.01)))]
    arrows = {line.get_marker(): (line.get_xdata()[0], line.get_ydata()[0])
              for line in first.lines if line.get_marker() in ("<", ">")}
    assert arrows == {"<": (pytest.approx(-limit), 1), ">": (pytest.approx(limit), 1)}
    assert not [line for line in second.lines if line.get_marker() in ("<", ">")]  # within the scale


def test_a_forest_is_written_as_a_png(tmp_path):
    path = save_forest(FOREST, tmp_path / "summary.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
