"""`iwu evaluate --segments` on a tiny trained run: the per-segment CSV, the eval file's `segments` summary and
the figure (iwu.plots.segments), read by content."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from iwu.cli import main
from iwu.config.schema import load_config
from iwu.engine.train import train
from iwu.inference.evaluation import segment_summary
from iwu.inference.loading import dataset_for, load_models, member_probabilities
from iwu.errors import UserError
from iwu.inference.meta_seg import _logistic, analyse, design_matrix, flag_probability, read_classifier
from iwu.inference.segment_rows import SegmentRows
from iwu.method.segments import boundary_mask, feature_names, segment_ids, segment_table
from iwu.plots.segments import outline_flagged, segments_figure

from drawn import drawn_figures
from tiny_runs import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two members after two steps on six validation scenes: their segments are of both kinds."""
    folder = tmp_path_factory.mktemp("segments")
    config = tiny_config(folder, data={"synthetic": {"n_train": 6, "n_val": 6, "width": 64}})
    out = folder / "run"
    train(load_config(config, [f"out={out}", "trainer.max_steps=2"]), progress=False)
    return out, folder / "scenes"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_evaluate_segments_writes_the_table_the_summary_and_the_figure(run, monkeypatch, capsys):
    import iwu.plots.segments

    drawn = drawn_figures(monkeypatch, iwu.plots.segments)
    out, root = run
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--segments"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "eval_cityscapes.json").read_text())
    summary = record["segments"]
    classes = record["classes"]
    names = feature_names(len(classes))

    header, *rows = read_csv(out / "segments_cityscapes.csv")
    assert header == ["image", "segment", "class", "class_name", *names, "iou"]
    assert len(rows) == summary["segments"] > 0
    assert summary["file"] == "segments_cityscapes.csv"
    # the rows are the segments of the ensemble's prediction, image by image, as segment_table gives them
    loaded = load_models(out)
    dataset = dataset_for(loaded, {"kind": "cityscapes", "root": root}, "val")
    assert sorted({r[0] for r in rows}) == sorted(dataset.names)
    first = dataset[0]
    members = member_probabilities(loaded.module, first["image"][None])
    expected = segment_table(members, first["label"][None])
    mine = [r for r in rows if r[0] == first["name"]]
    assert [int(r[1]) for r in mine] == list(range(len(expected.iou)))
    assert [int(r[2]) for r in mine] == expected.cls.tolist()
    assert all(r[3] == classes[int(r[2])] for r in rows)
    for k, name in enumerate(names):
        assert [float(r[4 + k]) for r in mine] == pytest.approx(expected.features[name].tolist(), rel=1e-5)
    assert [float(r[-1]) if r[-1] else math.nan for r in mine] == pytest.approx(expected.iou.tolist(), nan_ok=True)

    # the summary is the meta classification of the table as written
    ious = np.array([float(r[-1]) if r[-1] else np.nan for r in rows])
    image_ids = {n: i for i, n in enumerate(dict.fromkeys(r[0] for r in rows))}
    redone = analyse({name: np.array([float(r[4 + k]) for r in rows]) for k, name in enumerate(names)}, ious,
                     np.array([image_ids[r[0]] for r in rows]), np.array([int(r[2]) for r in rows]), len(classes))
    if "error" in summary:  # a fit needs both kinds of segments in every fold: say why there is none
        pytest.fail(f"the tiny run's segments could not be fitted: {summary['error']}")
    assert {k: v for k, v in summary.items() if k not in ("file", "classifier")} == redone.summary  # CSV and JSON keep every digit
    assert summary["folds"] == 5 and summary["seed"] == 0 and summary["images"] == 6
    assert set(summary["feature_auroc"]) == set(names)
    assert f"logistic regression {summary['logistic_auroc']:.4f}" in printed

    # the classifier fitted on every segment, saved for iwu predict, gives what scikit-learn's does
    assert summary["classifier"] == "segments_classifier_cityscapes.json"
    classifier = read_classifier(out / summary["classifier"], names)
    features = {name: np.array([float(r[4 + k]) for r in rows]) for k, name in enumerate(names)}
    cls = np.array([int(r[2]) for r in rows])
    keep = ~np.isnan(ious)
    x = design_matrix({k: v[keep] for k, v in features.items()}, cls[keep], len(classes))
    expected_p = _logistic().fit(x, ious[keep] == 0).predict_proba(x)[:, 1]
    assert flag_probability(classifier, {k: v[keep] for k, v in features.items()}, cls[keep]) == pytest.approx(
        expected_p, abs=1e-9)

    fig = drawn[out / "segments_cityscapes.png"]
    assert (out / "segments_cityscapes.png").exists()
    hist_ax, roc_ax = fig.axes[:2]
    assert hist_ax.get_ylabel() == "segment IoU"
    labels = [line.get_label() for line in roc_ax.get_lines()]
    assert labels == ["chance", f"instance_uncertainty alone (AUROC {summary['headline_auroc']:.3f})",
                      f"logistic regression, all features (AUROC {summary['logistic_auroc']:.3f})"]
    assert fig.get_suptitle().endswith("ensemble on cityscapes/val")


@pytest.mark.slow
def test_without_the_option_nothing_of_segments_is_written(run):
    out, root = run
    for path in out.glob("segments_*"):
        path.unlink()
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}"]) == 0
    assert "segments" not in json.loads((out / "eval_cityscapes.json").read_text())
    assert not list(out.glob("segments_*"))


def _rows_of_one_image():
    probs = torch.zeros(1, 1, 2, 4, 4)
    probs[:, :, 0] = 0.8
    probs[:, :, 1] = 0.2
    probs[:, :, :, 1:3, 1:3] = probs[:, :, :, 1:3, 1:3].flip(2)
    rows = SegmentRows(["road", "car"])
    rows.add(segment_table(probs, torch.zeros(1, 4, 4, dtype=torch.long)), ["a"], 0)
    return rows


def test_segments_that_cannot_be_fitted_keep_their_counts_and_say_why():
    rows = _rows_of_one_image()
    summary, meta = segment_summary(rows)
    assert meta is None
    assert summary == {"segments": 2, "with_target": 2,
                       "error": "--segments: 2 segments with a ground truth; meta classification needs at least "
                                "10: evaluate on more images"}
    cols = rows.columns()
    assert cols["image"].tolist() == ["a", "a"] and cols["iou"].tolist() == [12 / 16, 0.0]


def test_the_figure_shows_the_histogram_and_one_roc_curve_per_classifier():
    uncertainty = np.array([0.1, 0.2, 0.9, 1.0, 1.1])
    iou = np.array([0.9, 0.8, 0.0, 0.0, 0.5])
    curves = {"instance_uncertainty alone": ([0, 0, 1], [0, 1, 1], 1.0), "logistic": ([0, 0.5, 1], [0, 0.5, 1], 0.5)}
    fig = segments_figure(uncertainty, iou, curves, title="exp / standard / seed 0: ensemble on acdc/val")
    hist_ax, roc_ax = fig.axes[:2]
    (mesh,) = hist_ax.collections
    assert np.nansum(mesh.get_array()) == 5  # every segment counted once
    assert hist_ax.get_title() == "segment IoU against instance uncertainty (5 segments)"
    assert hist_ax.get_ylim() == (0, 1)
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in roc_ax.get_lines()}
    assert lines == {"chance": ([0, 1], [0, 1]), "instance_uncertainty alone (AUROC 1.000)": ([0, 0, 1], [0, 1, 1]),
                     "logistic (AUROC 0.500)": ([0, 0.5, 1], [0, 0.5, 1])}
    assert [t.get_text() for t in roc_ax.get_legend().get_texts()] == list(lines)
    assert roc_ax.get_xlabel().startswith("false positive rate") and fig.get_suptitle().endswith("acdc/val")
    empty = segments_figure([], [], {})
    assert [t.get_text() for t in empty.axes[0].texts] == ["no segment with a ground truth"]


def test_flagged_segments_are_outlined_with_their_probability():
    from matplotlib.figure import Figure

    pred = torch.tensor([[0, 0, 0, 1, 1, 1],
                         [0, 0, 0, 1, 1, 1],
                         [0, 0, 0, 1, 1, 1],
                         [2, 2, 2, 2, 2, 2]])
    ids, n = segment_ids(pred[None])
    assert n == 3 and ids[0].tolist()[0] == [0, 0, 0, 1, 1, 1] and ids[0, 3].tolist() == [2] * 6
    ax = Figure().subplots()
    assert outline_flagged(ax, ids[0].numpy(), [0.9, 0.2, 0.6]) == 2
    overlay = ax.images[0].get_array()
    drawn = np.asarray(overlay[..., 3]) > 0
    expected = boundary_mask(ids)[0].numpy() & np.isin(ids[0].numpy(), [0, 2])
    assert np.array_equal(drawn, expected) and drawn.sum() == 8 + 6  # segment 0: all but its inner (1,1)
    texts = [(t.get_text(), t.get_position()) for t in ax.texts]
    assert texts == [("0.90", (1.0, 1.0)), ("0.60", (2.5, 3.0))]  # the largest first, at its centroid


def test_a_saved_classifier_of_other_features_is_one_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{")
    with pytest.raises(UserError, match="not a segment classifier"):
        read_classifier(path, ["a"])
    path.write_text('{"features": ["a"], "num_classes": 1, "mean": [0, 0], "scale": [1, 1], "coef": [1, 1], '
                    '"intercept": 0}')
    assert read_classifier(path, ["a"])["coef"] == [1, 1]
    with pytest.raises(UserError, match="other features"):
        read_classifier(path, ["a", "b"])
    probability = flag_probability(read_classifier(path, ["a"]), {"a": np.array([0.0, 2.0])}, np.array([0, 0]))
    assert probability.tolist() == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-3))])


def test_flag_segments_numbers_the_pixels_as_the_table_and_scores_each_segment():
    from iwu.inference.meta_seg import flag_segments

    probs = torch.zeros(2, 1, 2, 4, 6)
    probs[:, :, 0] = 0.9
    probs[:, :, 1] = 0.1
    probs[:, :, :, :, 3:] = probs[:, :, :, :, 3:].flip(2)  # class 1 on the right half
    names = feature_names(2)
    classifier = {"features": list(names), "num_classes": 2, "mean": [0.0] * (len(names) + 2),
                  "scale": [1.0] * (len(names) + 2), "coef": [0.0] * len(names) + [-2.0, 2.0], "intercept": 0.0}
    ids, probability = flag_segments(classifier, probs)
    assert ids.tolist() == [[0, 0, 0, 1, 1, 1]] * 4
    assert probability.tolist() == pytest.approx([1 / (1 + math.exp(2)), 1 / (1 + math.exp(-2))])


@pytest.mark.slow
def test_predict_panel_outlines_the_segments_the_classifier_flags(run, tmp_path, monkeypatch, capsys):
    import iwu.plots.predictions
    from PIL import Image

    from iwu.plots.segments import outline_flagged as real_outline

    out, root = run
    assert main(["evaluate", str(out), "--data", f"cityscapes:{root}", "--segments"]) == 0
    flagged = []

    def spy(ax, ids, probability, threshold=0.5):
        flagged.append((ids, probability))
        return real_outline(ax, ids, probability, threshold)

    monkeypatch.setattr(iwu.plots.predictions, "outline_flagged", spy)
    drawn = drawn_figures(monkeypatch, iwu.plots.predictions)
    image = next(root.rglob("*leftImg8bit.png"))
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "maps"), "--panel",
                 "--segments", "cityscapes"]) == 0
    (fig,) = drawn.values()
    ids, probability = flagged[0]
    assert ids.shape == np.asarray(Image.open(image)).shape[:2] and len(probability) == ids.max() + 1
    prediction_ax = fig.axes[1]
    texts = [t.get_text() for t in prediction_ax.texts]
    shown = sorted(probability[probability >= 0.5], reverse=True)
    assert len(prediction_ax.images) == 2  # the prediction, then the outlines over it
    assert sorted(texts, reverse=True) == [f"{p:.2f}" for p in shown][:len(texts)] and len(texts) == min(len(shown), 12)
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "m2"), "--segments", "cityscapes"]) == 2
    assert "--segments outlines segments on the panel: add --panel" in capsys.readouterr().err
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "m3"), "--panel", "--segments", "acdc"]) == 2
    assert "--segments acdc: no" in capsys.readouterr().err
