"""`iwu demo` end to end on a few steps, and the command line's error contract."""

import json
import subprocess
import sys

import pytest

from iwu.cli import main
from iwu.config.schema import load_config
from iwu.sweep.demo import demo_config_path

from drawn import drawn_figures

TINY = ["trainer.max_steps=2", "val_every=2", "data.size=32", "data.synthetic.n_train=4",
        "data.synthetic.n_val=2", "data.synthetic.width=64"]


@pytest.mark.slow
def test_demo_trains_both_modes_and_prints_the_table(tmp_path, capsys, monkeypatch):
    import iwu.plots.predictions

    drawn = drawn_figures(monkeypatch, iwu.plots.predictions)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "2", *TINY]) == 0
    for mode in ("standard", "instance_uncertainty"):
        for seed in (0, 1):
            final = json.loads((out / mode / f"seed{seed}" / "final.json").read_text())
            assert (final["mode"], final["seed"], final["steps"]) == (mode, seed, 2)
    summary = json.loads((out / "demo.json").read_text())
    assert [len(v) for v in summary["results"].values()] == [2, 2]
    assert abs(sum(summary["train_share"]) - 1) < 1e-9
    # the method's ensemble on two validation scenes: image, labels, prediction and both uncertainties
    (figure,) = drawn.values()
    assert list(drawn) == [out / "uncertainty.png"] and (out / "uncertainty.png").is_file()
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 10 and [ax.get_title() for ax in shown[:5]] == [
        "image", "labels", "prediction", "pixel entropy", "instance uncertainty"]
    assert figure.get_suptitle() == "demo / instance_uncertainty / seed 0: ensemble on validation images"
    assert (out / "report" / "difference.png").is_file()
    assert "| mIoU |" in (out / "report" / "report.md").read_text()
    printed = capsys.readouterr().out
    table = printed[printed.index("ensemble IoU"):]
    assert "road" in table and "mIoU" in table and "gain" in table

    # the report command reads the same runs
    capsys.readouterr()
    assert main(["report", str(out), "--format", "csv"]) == 0
    assert "instance_uncertainty mean" in capsys.readouterr().out

    # finished runs are not trained again
    before = (out / "standard" / "seed0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--seeds", "2", *TINY]) == 0
    assert (out / "standard" / "seed0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before


def test_demo_config_is_the_packaged_one_by_name():
    packaged = load_config(demo_config_path())
    assert load_config("demo") == packaged  # `iwu train demo`, as `iwu train configs/demo.yaml` in a checkout
    assert (packaged.mode, len(packaged.members), packaged.model.pretrained) == ("instance_uncertainty", 3, False)


@pytest.mark.slow
def test_user_mistake_is_one_line_without_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "iwu", "demo", "--seeds", "0", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert run.returncode == 2  # argparse's usage line, then its one-line error
    assert run.stderr.strip().splitlines()[-1] == "iwu demo: error: argument --seeds: 0 is below 1"
    run = subprocess.run([sys.executable, "-m", "iwu", "demo", "--out", str(tmp_path), "trainer.max_step=3"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "did you mean trainer.max_steps" in run.stderr


def test_the_table_shows_a_spread_only_where_there_are_seeds_to_spread():
    from iwu.sweep.demo import per_class_table

    one = {"standard": [{"iou": [0.5, None], "miou": 0.5}], "instance_uncertainty": [{"iou": [0.6, None], "miou": 0.6}]}
    table = per_class_table(["road", "train"], one, [0.9, 0.1])
    assert "±" not in table and "0.500" in table and "+0.100" in table
    two = {m: runs * 2 for m, runs in one.items()}
    assert "0.500±0.000" in per_class_table(["road", "train"], two, [0.9, 0.1])


def test_version_names_the_package_version(capsys):
    import iwu

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"iwu {iwu.__version__}"


def test_a_demo_stopped_by_ctrl_c_says_the_demo_resumes_by_itself_on_a_line_of_its_own(tmp_path, capsys,
                                                                                      monkeypatch):
    import lightning.pytorch as pl

    from iwu.engine import train as engine_train

    def interrupted(*args, **kwargs):  # Lightning's answer to Ctrl-C inside fit: SystemExit over the interrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1)

    monkeypatch.setattr(pl.Trainer, "fit", interrupted)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a live bar's line is open on a terminal
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seeds", "1", *TINY]) == 130
    err = capsys.readouterr().err
    assert "\niwu demo: " in err and "unfinished; the same `iwu demo` command continues it" in err
    assert "resume=true" not in err.split("iwu demo: ", 1)[1]
    assert engine_train.RESUME_HINT == "the same command with resume=true"  # what plain `iwu train` says
