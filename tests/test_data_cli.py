"""`iwu synth` and `iwu prepare` from the command line."""

import json
import os
import re
from pathlib import Path

import pytest

from iwu.cli import main
from iwu.data.prepare import class_counts_file
from iwu.data.class_counts import read_class_counts
from iwu.errors import UserError


def test_synth_then_prepare(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IWU_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "acdc"
    assert main(["synth", "--out", str(out), "--layout", "acdc", "--n-train", "8", "--n-val", "4", "--size", "64",
                 "--seed", "2"]) == 0
    assert len(list(out.glob("rgb_anon/*/train/*/*_rgb_anon.png"))) == 8
    capsys.readouterr()
    assert main(["prepare", "--data", f"acdc:{out}:fog,snow", "--size", "32", "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "acdc train: 4 images at 32x32 cached in" in text and "acdc val: 2 images" in text
    assert "class proportions of train" in text and "road" in text and "bicycle" in text
    stores = sorted((tmp_path / "cache").iterdir())
    assert [s.name.split("-")[:3] for s in stores] == [["acdc", "train", "32"], ["acdc", "val", "32"]]
    manifest = json.loads((stores[0] / "manifest.json").read_text())
    assert manifest["conditions"] == ["fog", "snow"] and manifest["count"] == 4 and manifest["split"] == "train"
    # where the counts went, for `iwu report --class-counts`: printed after the table of the split counted
    assert f"class counts in {stores[0] / 'class_counts.json'} (for iwu report --class-counts)" in text
    assert "class counts in" not in text[text.index("acdc val:"):]


def test_class_counts_file_finds_the_fresh_store_of_the_training_split(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IWU_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "acdc"
    assert main(["synth", "--out", str(data), "--layout", "acdc", "--n-train", "4", "--n-val", "4",
                 "--size", "64"]) == 0
    spec, foggy = f"acdc:{data}", f"acdc:{data}:fog"
    command = re.escape(f"`iwu prepare --data {spec} --split train`")
    with pytest.raises(UserError, match=f"^{re.escape(spec)}: no up-to-date store .*; make one with {command}"):
        class_counts_file(spec)
    for size in ("48", "32"):
        assert main(["prepare", "--data", spec, "--size", size, "--split", "train", "--workers", "0"]) == 0
    printed = re.findall(r"^class counts in (\S+) ", capsys.readouterr().out, re.M)
    found = class_counts_file(spec)
    assert found == Path(printed[0]) and read_class_counts(found)["size"] == 48  # the largest of the sizes
    assert class_counts_file(str(found)) == found and class_counts_file("no/such.json") == Path("no/such.json")
    with pytest.raises(UserError, match="no up-to-date store"):  # its conditions make another dataset
        class_counts_file(foggy)
    label = next(data.glob("gt/*/train/*/*_labelTrainIds.png"))
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    with pytest.raises(UserError, match="no up-to-date store"):  # the data changed since: stale counts are not read
        class_counts_file(spec)


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert main(["prepare", "--data", "kitti:/x"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["synth", "--out", str(tmp_path / "s"), "--size", "32", "--height", "8"]) == 2
    assert "need sizes >= 16" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "--data", "cityscapes:/x", "--workers", "-1"],
        ["prepare", "--data", "cityscapes:/x", "--size", "0"],
        ["synth", "--out", "/tmp/never", "--seed", "-3"],
        ["synth", "--out", "/tmp/never", "--n-train", "two"],
        ["synth", "--out", "/tmp/never", "--size", "8"],
        ["demo", "--seeds", "-1"],
        ["demo", "--seeds", "0"],
    ],
)
def test_bad_counts_are_argparse_errors_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"argument {argv[-2]}:" in err.splitlines()[-1]
