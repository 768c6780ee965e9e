"""A shared checkpoint never runs code: the modules a run records (its `--import`) are information.

Every command that loads a run (evaluate, predict, masks, export, and `model.init_from` in train) is
given a checkpoint that names a module which, imported, writes a marker file; the module sits in the
working directory and on `sys.path`, as a module beside a downloaded checkpoint would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwu.cli import main
from iwu.config.schema import load_config
from iwu.engine.train import train
from tiny_runs import tiny_config

HELPERS = Path(__file__).parent / "helpers"
MODULE = "iwu_marker_module"  # a name no installed package has


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """(folder, crafted checkpoint, the scenes): a trained tiny run's best checkpoint whose record names
    MODULE, in a folder that holds MODULE.py; importing MODULE writes folder/marker."""
    folder = tmp_path_factory.mktemp("shared")
    train(load_config(tiny_config(folder), [f"out={folder / 'run'}", "trainer.max_steps=2"]), progress=False)
    checkpoint = torch.load(folder / "run" / "checkpoints" / "best_ensemble.ckpt", weights_only=True)
    checkpoint["iwu"]["config"]["imports"] = [MODULE]
    torch.save(checkpoint, folder / "model.ckpt")
    (folder / f"{MODULE}.py").write_text(f"from pathlib import Path\nPath({str(folder / 'marker')!r}).touch()\n")
    return folder, folder / "model.ckpt", folder / "scenes"


def _commands(ckpt: Path, scenes: Path, out: Path) -> dict[str, list[str]]:
    image = next((scenes / "leftImg8bit" / "val").rglob("*.png"))
    return {
        "evaluate": ["evaluate", str(ckpt), "--data", f"cityscapes:{scenes}"],
        "predict": ["predict", str(ckpt), str(image), "--out", str(out / "pred")],
        "masks": ["masks", str(ckpt), "--data", f"cityscapes:{scenes}", "--split", "val", "--out", str(out / "masks")],
        "export": ["export", str(ckpt), "--format", "torchscript", "--out", str(out / "export")],
    }


@pytest.mark.parametrize("command", ["evaluate", "predict", "masks", "export"])
def test_no_command_imports_what_a_checkpoint_names(shared, command, tmp_path, monkeypatch):
    folder, ckpt, scenes = shared
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    assert main(_commands(ckpt, scenes, tmp_path)[command]) == 0  # its members are iwu's: nothing is missing
    assert MODULE not in sys.modules and not (folder / "marker").exists()


def test_init_from_does_not_import_what_a_checkpoint_names(shared, tmp_path, monkeypatch):
    folder, ckpt, _ = shared
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    overrides = [f"out={tmp_path / 'run'}", "trainer.max_steps=1", f"model.init_from={ckpt}"]
    train(load_config(tiny_config(folder, "again"), overrides), progress=False)
    assert MODULE not in sys.modules and not (folder / "marker").exists()


def test_a_member_from_a_recorded_module_is_refused_with_the_import_to_pass(shared, tmp_path, capsys, monkeypatch):
    folder, ckpt, scenes = shared
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["iwu"]["config"]["members"][1]["name"] = "marker_net"  # a member only the recorded module could register
    torch.save(checkpoint, tmp_path / "user.ckpt")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    for command, argv in _commands(tmp_path / "user.ckpt", scenes, tmp_path).items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"pass --import {MODULE}" in err and "marker_net" in err, (command, err)
    assert MODULE not in sys.modules and not (folder / "marker").exists()


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["python -m iwu", "iwu"])
def test_a_fresh_process_in_the_checkpoints_folder_runs_nothing(shared, entry, tmp_path):
    """`python -m iwu` puts the working directory on sys.path, and so does the console script when
    PYTHONPATH holds an empty entry."""
    folder, ckpt, scenes = shared
    program = [sys.executable, "-m", "iwu"] if entry != "iwu" else [str(Path(sys.executable).parent / "iwu")]
    env = {**os.environ, "PYTHONPATH": f":/nonexistent{os.pathsep}{folder}"}
    done = subprocess.run([*program, *_commands(Path(ckpt.name), scenes, tmp_path)["evaluate"]], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (folder / "marker").exists()


@pytest.mark.parametrize("damage", [
    ("imports not a list of strings", lambda about: about["config"].__setitem__("imports", "os")),
    ("imports holding a number", lambda about: about["config"].__setitem__("imports", [3])),
    ("classes missing", lambda about: about.pop("classes")),
    ("classes not a list", lambda about: about.__setitem__("classes", "road")),
    ("models_revision a string", lambda about: about.__setitem__("models_revision", "2")),
    ("members not a list", lambda about: about["config"].__setitem__("members", {"name": "x"})),
], ids=lambda d: d[0])
def test_a_tampered_run_record_is_one_line_in_every_command(shared, damage, tmp_path, capsys):
    _, ckpt, scenes = shared
    checkpoint = torch.load(ckpt, weights_only=True)
    damage[1](checkpoint["iwu"])
    torch.save(checkpoint, tmp_path / "tampered.ckpt")
    for command, argv in _commands(tmp_path / "tampered.ckpt", scenes, tmp_path).items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "its run record is damaged" in err, (command, err)


def test_a_file_torch_cannot_read_is_iwus_sentence_not_torchs(tmp_path, capsys):
    garbage = tmp_path / "model.ckpt"
    garbage.write_bytes(b"PK\x03\x04" + b"\x1b[31m" * 200)  # a zip header, then terminal escapes
    assert main(["evaluate", str(garbage), "--data", f"cityscapes:{tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "cannot read the checkpoint" in err
