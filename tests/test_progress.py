"""What a run prints: a start line, a few plain lines and one per validation; Lightning's chatter only on request."""

import csv
import os
import re
import subprocess
import sys

import pytest

import iwu.engine.progress
import iwu.engine.train
from iwu.config.schema import load_config
from iwu.sweep.demo import demo_config_path
from iwu.engine.progress import line_every, members_summary
from iwu.engine.train import train
from tiny_runs import tiny_config
from crashing import Crash, CrashAt

LIGHTNING_CHATTER = ["GPU available", "TPU available", "Tip:", "Trainable params", "Restoring states", "LeafSpec",
                     "`Trainer.fit` stopped", "not resumable", "logging interval"]
TIME = r"\d\d:\d\d elapsed, (\d\d:\d\d|\?) left"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A config file for tiny runs (6 training scenes at 32x32: 3 batches an epoch), its data already written."""
    return tiny_config(tmp_path_factory.mktemp("progress"), mode="standard", trainer={"max_steps": 8})


def _iwu(*args, log):
    """`iwu ...` as a user runs it with its output in a file (no terminal); the file's text."""
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "iwu", *args], stdout=f, stderr=subprocess.STDOUT)
    text = log.read_text()
    assert done.returncode == 0, text
    return text


def test_lines_come_every_few_steps_and_at_each_validation(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(iwu.engine.progress, "line_every", lambda total: 3)
    out = tmp_path / "run"
    train(load_config(tiny, [f"out={out}"]), progress=False)
    lines = capsys.readouterr().out.splitlines()
    with (out / "logs" / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    loss = {int(r["step"]): float(r["train/loss"]) for r in rows if r["train/loss"]}
    miou = {int(r["step"]): float(r["val/ensemble/miou"]) for r in rows if r["val/ensemble/miou"]}
    assert list(miou) == [3, 6, 8]  # every 3 steps, and after the last
    assert lines[0] == (f"iwu train: tiny / standard / seed 0 -> {out}: 8 steps, validating every 3; members "
                        "deeplabv3plus_mobilenet (lr 0.001), deeplabv3plus_mobilenet (lr 0.0005)")
    expected = [
        rf"  step 3/8: loss {loss[3]:.4f}, last mIoU --, {TIME}", f"  step 3/8: validation mIoU {miou[3]:.4f}",
        rf"  step 6/8: loss {loss[6]:.4f}, last mIoU {miou[3]:.4f}, {TIME}", f"  step 6/8: validation mIoU {miou[6]:.4f}",
        rf"  step 8/8: loss {loss[8]:.4f}, last mIoU {miou[6]:.4f}, {TIME}", f"  step 8/8: validation mIoU {miou[8]:.4f}",
    ]
    assert len(lines) == 1 + len(expected)
    for line, pattern in zip(lines[1:], expected):
        assert re.fullmatch(re.escape(pattern).replace(re.escape(TIME), TIME), line), (line, pattern)


def test_a_terminal_gets_one_live_bar_and_the_validations_above_it(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(iwu.engine.train, "live_bar", lambda progress: progress)  # as if stderr were a terminal
    train(load_config(tiny, [f"out={tmp_path}", "trainer.max_steps=4", "val_every=2"]))
    printed = capsys.readouterr()
    steps = re.findall(r"train: +\d+%\|[^|]*\| (\d)/4", printed.err)
    assert steps[0] == "0" and steps[-1] == "4" and printed.err.count("train:   0%") == 1  # one bar, from 0 to 4
    assert "Validation" not in printed.err and "loss=" in printed.err
    assert [line[:22] for line in printed.out.splitlines()] == [
        "iwu train: tiny / stan", "  step 2/4: validation", "  step 4/4: validation"]


def test_about_twenty_lines_a_run_whatever_its_length():
    assert [line_every(n) for n in (1, 8, 20, 21, 400, 48000)] == [1, 1, 1, 2, 20, 2400]


def test_alike_members_are_counted_once(tiny):
    config = load_config(tiny)
    config.members = [config.members[0]] * 3 + [config.members[1]]
    assert members_summary(config) == "3 x deeplabv3plus_mobilenet (lr 0.001), deeplabv3plus_mobilenet (lr 0.0005)"


@pytest.mark.slow
def test_lightning_speaks_when_asked(tiny, tmp_path):
    # silent by default: the resumed run and the demo below
    text = _iwu("train", str(tiny), f"out={tmp_path}", "trainer.max_steps=1", "trainer.verbose=true",
                log=tmp_path / "verbose.log")
    assert all(words in text for words in ("GPU available", "Tip:", "Trainable params")), text


@pytest.mark.slow
def test_a_resumed_run_says_it_resumes_exactly_and_lightning_does_not_warn_otherwise(tiny, tmp_path):
    out = tmp_path / "resumed"
    args = [f"out={out}", "val_every=2", "trainer.max_steps=6"]
    with pytest.raises(Crash):
        train(load_config(tiny, args), callbacks=[CrashAt(5)], progress=False)
    # last.ckpt holds step 4, in the middle of the second epoch: the case Lightning calls unreliable
    text = _iwu("train", str(tiny), *args, "resume=true", log=tmp_path / "resume.log")
    assert f"iwu train: resuming at step 4 from {out / 'checkpoints' / 'last.ckpt'}; iwu resumes exactly" in text
    assert not [words for words in LIGHTNING_CHATTER if words in text], text
    assert text.startswith("iwu train: tiny / standard / seed 0") and "\r" not in text


def test_lightnings_srun_hint_is_chatter_on_a_machine_with_slurm(tiny, tmp_path, monkeypatch):
    """A login node has SLURM's client: `srun` on PATH, no job around the command."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    args = ["val_every=2", "trainer.max_steps=2"]
    quiet = _iwu("train", str(tiny), f"out={tmp_path / 'quiet'}", *args, log=tmp_path / "quiet.log")
    hint = "The `srun` command is available on your system but is not used"
    assert hint not in quiet and "HINT" not in quiet, quiet
    verbose = _iwu("train", str(tiny), f"out={tmp_path / 'verbose'}", *args, "trainer.verbose=true",
                   log=tmp_path / "verbose.log")
    assert hint in verbose  # asked for: shown


@pytest.mark.slow
def test_a_demo_run_logged_to_a_file_stays_small(tmp_path):
    tiny_demo = ["trainer.max_steps=10", "val_every=5", "data.size=32", "data.synthetic.n_train=4",
                 "data.synthetic.n_val=2", "data.synthetic.width=64", f"data.root={tmp_path / 'data'}",
                 f"data.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'run'}"]
    text = _iwu("train", str(demo_config_path()), *tiny_demo, log=tmp_path / "train.log")
    assert not [words for words in LIGHTNING_CHATTER if words in text], text
    lines = text.splitlines()
    assert sum(line.startswith("iwu train: demo / instance_uncertainty / seed 0") for line in lines) == 1
    assert sum(bool(re.fullmatch(rf"  step \d+/10: loss .*, {TIME}", line)) for line in lines) == 10
    assert sum(bool(re.fullmatch(r"  step (5|10)/10: validation mIoU 0\.\d{4}", line)) for line in lines) == 2
    assert len(text.encode()) < 3000, text  # the lines above, the data's preparation, the result
