"""Training curves: sparse CSVLogger rows read back as per-column series, and
figures drawn for full, partial, odd and empty logs."""

import math

import pytest
from PIL import Image

from iwu.plots.curves import curve_panels, read_metrics
from iwu.errors import UserError
from iwu.plots.curves import curves_figure, save_curves

# as Lightning's CSVLogger writes it: one row per log call, only its own columns filled
SPARSE = """\
epoch,step,train/loss,val/deeplabv3plus_mobilenet_0/miou,val/ensemble/miou,val_cityscapes/ensemble/miou
0,9,1.5,,,
0,19,1.25,,,
0,19,,0.31,0.35,0.2
1,29,0.875,,,
1,39,0.5,,,
1,39,,0.4,0.45,
"""

EXPECTED = {
    "epoch": [(9, 0.0), (19, 0.0), (19, 0.0), (29, 1.0), (39, 1.0), (39, 1.0)],
    "train/loss": [(9, 1.5), (19, 1.25), (29, 0.875), (39, 0.5)],
    "val/deeplabv3plus_mobilenet_0/miou": [(19, 0.31), (39, 0.4)],
    "val/ensemble/miou": [(19, 0.35), (39, 0.45)],
    "val_cityscapes/ensemble/miou": [(19, 0.2)],
}


def write(tmp_path, text, name="metrics.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_metrics_gives_the_pairs_of_each_column(tmp_path):
    metrics = read_metrics(write(tmp_path, SPARSE))
    assert metrics == EXPECTED
    assert list(metrics) == list(EXPECTED)  # columns in header order
    assert all(isinstance(s, int) and isinstance(v, float) for pairs in metrics.values() for s, v in pairs)


def test_read_metrics_skips_junk_and_a_line_being_written(tmp_path):
    text = "step,train/loss\n1,2.0\n,3.0\n2,not-a-number\n3,nan\n4.0,0.5\n5,0.2"  # last line has no newline yet
    metrics = read_metrics(write(tmp_path, text))
    assert list(metrics) == ["train/loss"]
    steps_values = metrics["train/loss"]
    assert [s for s, _ in steps_values] == [1, 3, 4]
    assert steps_values[0] == (1, 2.0) and math.isnan(steps_values[1][1]) and steps_values[2] == (4, 0.5)


def test_read_metrics_of_header_only_and_empty_files(tmp_path):
    assert read_metrics(write(tmp_path, "epoch,step,train/loss\n")) == {"epoch": [], "train/loss": []}
    assert read_metrics(write(tmp_path, "epoch,step,train/loss")) == {"epoch": [], "train/loss": []}
    assert read_metrics(write(tmp_path, "")) == {}


def test_missing_metrics_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="metrics.csv"):
        read_metrics(tmp_path / "metrics.csv")
    with pytest.raises(UserError):
        save_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


# an instance_uncertainty run as iwu.engine.ensemble logs it: the rates of two members' parts, the uncertainty statistics
IU = """\
epoch,step,train/loss,train/m0/loss,train/m1/loss,lr/member0/backbone,lr/member0/head,lr/member1/backbone,\
lr/member1/head,train/most_uncertain_instance,train/pixel_entropy,train/instances_per_image,val/ensemble/miou
0,1,2.0,2.2,1.8,1e-5,1e-4,1e-5,1e-4,0.9,0.7,41.0,
0,2,1.5,1.6,1.4,5e-6,5e-5,5e-6,5e-5,0.8,0.6,38.5,
0,2,,,,,,,,,,,0.125
"""


def lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_panels_of_an_instance_uncertainty_run_have_readable_labels(tmp_path):
    panels = curve_panels(read_metrics(write(tmp_path, IU)))
    assert [p.title for p in panels] == ["training loss", "validation mIoU", "learning rate",
                                         "most uncertain instance (training batches)", "pixel entropy (training batches)",
                                         "instances per image (training batches)"]
    loss, miou, rate, instance, entropy, count = panels
    assert [(s.label, s.steps, s.values) for s in loss.series] == [
        ("mean of the members", (1, 2), (2.0, 1.5)), ("m0", (1, 2), (2.2, 1.6)), ("m1", (1, 2), (1.8, 1.4))]
    assert [(s.label, s.values) for s in miou.series] == [("ensemble", (0.125,))]
    # members sharing a schedule are one line, named by both
    assert [(s.label, s.values) for s in rate.series] == [("member0 backbone, member1 backbone", (1e-5, 5e-6)),
                                                          ("member0 head, member1 head", (1e-4, 5e-5))]
    assert rate.log and not loss.log  # the rates span a factor 20, the losses less than 10
    assert curve_panels({"train/loss": [(1, 10.0), (2, 0.5)]})[0].log
    assert [s.values for p in (instance, entropy, count) for s in p.series] == [(0.9, 0.8), (0.7, 0.6), (41.0, 38.5)]


def test_curves_figure_draws_the_series_under_their_labels(tmp_path):
    fig = curves_figure(read_metrics(write(tmp_path, IU)), title="exp / instance_uncertainty / seed 3")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes][:3] == ["training loss", "validation mIoU", "learning rate"]
    assert lines(axes[0]) == {"mean of the members": ([1, 2], [2.0, 1.5]), "m0": ([1, 2], [2.2, 1.6]),
                              "m1": ([1, 2], [1.8, 1.4])}
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["mean of the members", "m0", "m1"]
    assert [lines(ax) for ax in axes[3:]] == [{"most uncertain instance": ([1, 2], [0.9, 0.8])},
                                             {"pixel entropy": ([1, 2], [0.7, 0.6])},
                                             {"instances per image": ([1, 2], [41.0, 38.5])}]
    assert [ax.get_ylabel() for ax in axes] == ["loss", "mIoU", "learning rate", "per image, mean of a batch",
                                                "mean over pixels", "predicted instances"]
    assert axes[0].get_yscale() == "linear" and axes[2].get_yscale() == "log"
    assert fig.get_suptitle() == "exp / instance_uncertainty / seed 3"
    # one validation: a marker at its step, on the step axis of the training curves, mIoU from 0
    (ensemble,) = axes[1].get_lines()
    assert ensemble.get_marker() == "o" and list(ensemble.get_xdata()) == [2]
    assert axes[1].get_xlim()[0] == 0 and axes[1].get_xlim()[1] >= 2 and axes[1].get_ylim()[0] == 0


def test_curves_figure_of_sparse_logs_keeps_model_colours_across_validation_sets(tmp_path):
    fig = curves_figure(read_metrics(write(tmp_path, SPARSE)))
    loss_ax, val_ax = [ax for ax in fig.axes if ax.get_visible()]  # no rates nor uncertainty logged
    drawn = {line.get_label(): line for line in val_ax.get_lines()}
    assert list(drawn) == ["deeplabv3plus_mobilenet_0", "ensemble", "ensemble (cityscapes)"]
    assert drawn["ensemble"].get_color() == drawn["ensemble (cityscapes)"].get_color()
    assert drawn["ensemble (cityscapes)"].get_linestyle() == "--" and drawn["ensemble"].get_linestyle() == "-"
    assert drawn["ensemble"].get_linewidth() > drawn["deeplabv3plus_mobilenet_0"].get_linewidth()
    assert lines(val_ax)["ensemble"] == ([19, 39], [0.35, 0.45])
    assert lines(loss_ax) == {"mean of the members": ([9, 19, 29, 39], [1.5, 1.25, 0.875, 0.5])}
    assert fig.get_suptitle() == ""


def test_curves_of_empty_logs_say_so(tmp_path):
    for text in (SPARSE.splitlines()[0] + "\n", ""):
        loss_ax, val_ax = curves_figure(read_metrics(write(tmp_path, text))).axes[:2]
        assert [t.get_text() for t in loss_ax.texts] == ["no training loss logged yet"]
        assert [t.get_text() for t in val_ax.texts] == ["no validation yet"]


def test_curves_with_odd_values(tmp_path):
    # a negative or NaN loss (no log scale, NaN left out), one point per series, many models
    models = [f"deeplabv3plus_mobilenet_{i}" for i in range(12)] + ["ensemble"]
    header = "epoch,step,train/loss,train/loss_epoch," + ",".join(f"val/{m}/miou" for m in models)
    row = "0,5,-0.5,nan," + ",".join(str(i / 20) for i in range(len(models)))
    loss_ax, val_ax = curves_figure(read_metrics(write(tmp_path, header + "\n" + row + "\n"))).axes[:2]
    assert loss_ax.get_yscale() == "linear" and lines(loss_ax) == {"mean of the members": ([5], [-0.5])}
    assert len(val_ax.get_lines()) == 13 and lines(val_ax)["ensemble"] == ([5], [0.6])


def test_save_curves_writes_a_png_atomically_creating_folders(tmp_path):
    out = save_curves(write(tmp_path, SPARSE), tmp_path / "run" / "figures" / "curves.png", title="a run")
    assert out == tmp_path / "run" / "figures" / "curves.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary left


def test_the_ensemble_has_one_colour_however_many_members_it_has():
    from matplotlib.colors import same_color

    from iwu.plots.colours import ENSEMBLE_COLOUR

    for count in (1, 3, 12):  # the ensemble came after its members: orange with one, red with three
        members = [f"deeplabv3plus_mobilenet_{i}" for i in range(count)]
        metrics = {**{f"val/{m}/miou": [(1, 0.3)] for m in members}, "val/ensemble/miou": [(1, 0.4)],
                   "val_acdc/ensemble/miou": [(1, 0.2)]}
        drawn = {line.get_label(): line.get_color() for line in curves_figure(metrics).axes[1].get_lines()}
        assert same_color(drawn["ensemble"], ENSEMBLE_COLOUR) and same_color(drawn["ensemble (acdc)"], ENSEMBLE_COLOUR)
        assert not any(same_color(drawn[m], ENSEMBLE_COLOUR) for m in members)
        assert len({drawn[m] for m in members}) == min(count, 10)  # the members keep the colour cycle


def test_the_loss_panel_names_the_loss_of_the_runs_mode(tmp_path, monkeypatch):
    import iwu.plots.curves as curves
    from iwu.method.modes import MODES

    from drawn import drawn_figures

    metrics = read_metrics(write(tmp_path, IU))
    assert curve_panels(metrics, "instance_uncertainty")[0].ylabel == "uncertainty-weighted cross-entropy"
    assert curve_panels(metrics, "standard")[0].ylabel == "cross-entropy"
    assert curve_panels(metrics, "sqrt_uncertainty")[0].ylabel == "sqrt_uncertainty loss"  # a mode of one's own
    assert curve_panels(metrics)[0].ylabel == "loss"  # the mode not known
    weighted = "uncertainty-weighted cross-entropy"
    assert {name: mode.loss_name for name, mode in MODES.items() if mode.loss.__module__ == "iwu.method.modes"} == {
        "standard": "cross-entropy", "class_weighted": "class-weighted cross-entropy", "focal": "focal loss",
        "dice": "Dice loss", "ce_dice": "cross-entropy + Dice", "ohem": "OHEM cross-entropy",
        "lovasz": "Lovasz-softmax loss", "ce_lovasz": "cross-entropy + Lovasz-softmax",
        "recall": "recall-weighted cross-entropy", "pixel_uncertainty": weighted,
        "offline_masks": weighted, "instance_uncertainty": weighted}  # every mode iwu ships says its loss
    drawn = drawn_figures(monkeypatch, curves)
    save_curves(write(tmp_path, IU), tmp_path / "curves.png", title="a run", mode="offline_masks")
    (fig,) = drawn.values()
    assert fig.axes[0].get_title() == "training loss"
    assert fig.axes[0].get_ylabel() == "uncertainty-weighted cross-entropy"
