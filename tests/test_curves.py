"""Training curves: sparse CSVLogger rows read back as per-column series, and
figures drawn for full, partial, odd and empty logs."""

import math

import pytest
from PIL import Image

from iwu.curves import read_metrics, save_curves
from iwu.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

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


def check_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.load()
        width, height = img.size
    assert 600 <= width <= 3000 and 250 <= height <= 1500 and width > height  # two panels side by side


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


def test_save_curves_writes_a_png(tmp_path):
    out = save_curves(write(tmp_path, SPARSE), tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    check_png(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_save_curves_of_a_header_only_csv(tmp_path):
    header = SPARSE.splitlines()[0] + "\n"
    check_png(save_curves(write(tmp_path, header), tmp_path / "empty.png"))
    check_png(save_curves(write(tmp_path, "", "blank.csv"), tmp_path / "blank.png"))


def test_save_curves_creates_the_parent_folder(tmp_path):
    out = save_curves(write(tmp_path, SPARSE), tmp_path / "run" / "figures" / "curves.png")
    check_png(out)


def test_save_curves_with_odd_values(tmp_path):
    # a negative or NaN loss (no log scale), one point per series, no validation, many models
    models = [f"deeplabv3plus_mobilenet_{i}" for i in range(12)] + ["ensemble"]
    header = "epoch,step,train/loss,train/loss_epoch," + ",".join(f"val/{m}/miou" for m in models)
    row = "0,5,-0.5,nan," + ",".join(str(i / 20) for i in range(len(models)))
    check_png(save_curves(write(tmp_path, header + "\n" + row + "\n"), tmp_path / "odd.png"))
    check_png(save_curves(write(tmp_path, "step,train/loss\n1,0.3\n", "one.csv"), tmp_path / "one.png"))
