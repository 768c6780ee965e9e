"""Every bad input gives one line naming the file: listed all at once by `--check`, raised on loading."""

import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from iwu.cli import main
from iwu.data import ACDC, Cityscapes, DataFileError, SegmentationFolder, check_dataset
from iwu.data.synthetic import write_synthetic
from iwu.errors import UserError


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("clean") / "cs", "cityscapes", n_train=5, n_val=2, size=64)


@pytest.fixture()
def root(clean, tmp_path):
    copy = tmp_path / "cs"
    shutil.copytree(clean, copy)
    return copy


def _pairs(root, split="train"):
    """(image, label) paths of the clean dataset, in order, whether or not a break removed them."""
    labels = {f"{p.parent.name}/{p.name.split('_gtFine')[0]}" for p in root.glob(f"gtFine/{split}/*/*.png")}
    images = {f"{p.parent.name}/{p.name.split('_leftImg8bit')[0]}" for p in root.glob(f"leftImg8bit/{split}/*/*.png")}
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    names = sorted(labels | images)
    return [(image_dir / f"{n}_leftImg8bit.png", label_dir / f"{n}_gtFine_labelIds.png") for n in names]


# Each breaks a clean copy and returns (the file at fault, words the message must hold).
def _no_label(root):
    image, label = _pairs(root)[0]
    label.unlink()
    return image, "image without a label"


def _no_image(root):
    image, label = _pairs(root)[1]
    image.unlink()
    return label, "label without an image"


def _bad_value(root):
    _, label = _pairs(root)[2]
    values = np.asarray(Image.open(label)).copy()
    values[0, :3] = (40, 41, 200)
    Image.fromarray(values).save(label)
    return label, "label values 40, 41, 200 are not known ids"


def _size_mismatch(root):
    image, _ = _pairs(root)[3]
    Image.open(image).resize((32, 16)).save(image)
    return image, "image is 32x16 but its label"


def _unreadable(root):
    image, _ = _pairs(root)[4]
    image.write_bytes(b"not a png at all")
    return image, "unreadable image"


def _truncated(root):
    _, label = _pairs(root)[4]
    label.write_bytes(label.read_bytes()[:60])
    return label, "unreadable label"


def _half_rows(root):
    """A PNG cut off inside its pixel data and closed again: a whole zlib stream of the top half, valid chunks.
    Pillow decodes it without a word, the lower half black."""
    image, _ = _pairs(root)[2]
    with Image.open(image) as img:
        pixels = np.asarray(img.convert("RGB"))
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height // 2))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                      + chunk(b"IEND", b""))
    with Image.open(image) as img:
        img.load()  # what Pillow alone accepts
    return image, "its pixel data stops before the last row"


def _colour_label(root):
    image, label = _pairs(root)[0]
    Image.open(image).save(label)
    return label, "label has mode RGB"


def _empty_split(root):
    for pattern in ("leftImg8bit/train/*/*", "gtFine/train/*/*"):
        for p in root.glob(pattern):
            p.unlink()
    return root / "leftImg8bit" / "train", "empty split"


def _missing_folder(root):
    shutil.rmtree(root / "gtFine" / "train")
    return root / "gtFine" / "train", "missing folder"


BREAKS = [_no_label, _no_image, _bad_value, _size_mismatch, _unreadable, _truncated, _half_rows, _colour_label,
          _empty_split, _missing_folder]


def _load_all(root):
    for _ in Cityscapes(root, "train", size=16):
        pass


@pytest.mark.parametrize("brk", BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_each_problem_is_one_line_in_check_and_on_loading(root, brk, capsys):
    path, words = brk(root)
    assert main(["prepare", "--data", f"cityscapes:{root}", "--check", "--split", "train", "--workers", "0"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and words in lines[0], lines
    with pytest.raises(DataFileError) as err:
        _load_all(root)
    assert str(err.value) == lines[0]


def test_check_lists_every_problem_at_once(root, capsys):
    breaks = [_no_label, _no_image, _bad_value, _size_mismatch, _unreadable]
    expected = [brk(root) for brk in breaks]
    for p in (root / "leftImg8bit" / "val").glob("*/*"):
        p.unlink()
    for p in (root / "gtFine" / "val").glob("*/*"):
        p.unlink()
    counts, problems = check_dataset({"kind": "cityscapes", "root": str(root)}, ["train", "val", "test"])
    assert len(problems) == len(breaks) + 1 + 2  # + empty val + missing test folders (images and labels)
    for path, words in expected:
        assert any(line.startswith(f"{path}: ") and words in line for line in problems), (path, problems)
    assert counts == {"train": 3, "val": 0, "test": 0}
    # loading stops at the first, saying how many more there are
    with pytest.raises(DataFileError, match=r"and 1 more problems"):
        Cityscapes(root, "train")
    # the command without --check: one line, exit 2, no traceback
    capsys.readouterr()
    assert main(["prepare", "--data", f"cityscapes:{root}", "--size", "16", "--cache-dir", str(root / "c")]) == 2
    err = capsys.readouterr().err.strip().split("\r")[-1]  # after any progress bar
    assert err.startswith("iwu prepare: error: ") and "\n" not in err and "Traceback" not in err


def test_worker_errors_stay_one_line(root):
    path, _ = _bad_value(root)
    loader = torch.utils.data.DataLoader(Cityscapes(root, "train", size=16), batch_size=1, num_workers=1)
    with pytest.raises(UserError) as err:
        list(loader)
    message = str(err.value)
    assert message.startswith(f"{path}: label values 40") and "Traceback" not in message


@pytest.mark.slow
def test_clean_data_passes(clean, capsys):
    assert main(["prepare", "--data", f"cityscapes:{clean}", "--check", "--workers", "0"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_missing_root(tmp_path):
    with pytest.raises(DataFileError, match="no such folder"):
        Cityscapes(tmp_path / "nowhere")
    with pytest.raises(DataFileError, match="no such folder"):
        SegmentationFolder(tmp_path / "nowhere")


def test_acdc_missing_condition(tmp_path):
    root = write_synthetic(tmp_path / "acdc", "acdc", n_train=4, n_val=0, size=32)
    shutil.rmtree(root / "rgb_anon" / "rain")
    assert len(ACDC(root, "train", conditions="fog,night")) == 2
    with pytest.raises(DataFileError, match=r"rgb_anon/rain/train: missing folder"):
        ACDC(root, "train")


def test_folder_classes_file_problems(tmp_path, capsys):
    for split in ("train",):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / split / "a.png")
        Image.fromarray(np.full((8, 8), 3, np.uint8)).save(tmp_path / "labels" / split / "a.png")
    with pytest.raises(UserError, match="classes.yaml: missing"):
        SegmentationFolder(tmp_path, "train")
    (tmp_path / "classes.yaml").write_text("classes: [a, b\n")
    with pytest.raises(UserError, match="not valid YAML"):
        SegmentationFolder(tmp_path, "train")
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"classes": ["a", "b"], "palette": [[0, 0, 0]]}))
    with pytest.raises(UserError, match="palette"):
        SegmentationFolder(tmp_path, "train")
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"classes": ["a", "b"]}))
    assert main(["prepare", "--data", f"folder:{tmp_path}", "--check", "--split", "train", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "labels/train/a.png: label values 3 are not known ids; expected class ids 0..1 and ignore 255" in out


def test_a_split_without_any_labeled_pixel_is_flagged_and_not_trained_on(root, tmp_path, capsys):
    from iwu.config.schema import load_config
    from iwu.engine.train import train

    for label in root.glob("gtFine/train/*/*_labelIds.png"):
        Image.fromarray(np.zeros((32, 64), np.uint8)).save(label)  # labelId 0, "unlabeled": all ignore
    assert main(["prepare", "--data", f"cityscapes:{root}", "--check", "--split", "train", "--workers", "0"]) == 1
    assert capsys.readouterr().out.strip() == f"{root}: the train split has no labeled pixel (every label is " \
                                              "ignore): nothing to learn from or score"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"members": [{"name": "deeplabv3plus_mobilenet", "lr": 1e-3}],
                                      "model": {"pretrained": False},
                                      "data": {"kind": "cityscapes", "root": str(root), "size": 16,
                                               "cache_dir": str(tmp_path / "cache")},
                                      "trainer": {"max_steps": 2, "accelerator": "cpu"}}))
    for mode in ("standard", "class_weighted"):
        with pytest.raises(UserError, match="the train split has no labeled pixel"):
            train(load_config(config, [f"mode={mode}", f"out={tmp_path / mode}"]), progress=False)
