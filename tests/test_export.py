"""`iwu export` writes what a deployer needs beside the networks, replaces its own files and never a user's."""

import json

import pytest
import torch

from iwu.cli import main
from iwu.config import load_config
from iwu.data.common import IMAGENET_MEAN, IMAGENET_STD
from iwu.engine.train import train
from tiny_runs import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    train(load_config(tiny_config(folder), [f"out={folder / 'run'}", "trainer.max_steps=1"]), progress=False)
    return folder / "run"


def test_export_json_holds_the_classes_the_normalisation_and_the_files(run, tmp_path):
    out = tmp_path / "deploy"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["classes"][:2] == ["road", "sidewalk"] and len(manifest["classes"]) == 19
    assert (manifest["mean"], manifest["std"], manifest["size"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD), 32)
    assert set(manifest["files"]) == {"deeplabv3plus_mobilenet_0", "deeplabv3plus_mobilenet_1", "ensemble"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["files"].values(), "export.json"])
    ensemble = torch.jit.load(str(out / manifest["files"]["ensemble"]))
    assert ensemble(torch.zeros(1, 3, 32, 32)).sum(dim=1).allclose(torch.ones(1, 32, 32))
    before = {p.name: p.stat().st_ino for p in out.iterdir()}
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    after = {p.name: p.stat().st_ino for p in out.iterdir()}
    assert after.keys() == before.keys() and all(after[n] != before[n] for n in after)  # its own: each rewritten


def test_a_users_file_of_an_exports_name_is_refused_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "ensemble.torchscript.pt").write_text("a user's own model")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 2
    assert "ensemble.torchscript.pt exists already; add --overwrite" in capsys.readouterr().err
    assert (out / "ensemble.torchscript.pt").read_text() == "a user's own model"
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.torchscript.pt"]  # nothing written
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out), "--overwrite"]) == 0
    assert (out / "export.json").exists()
