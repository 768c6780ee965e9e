"""`iwu sweep`: the grid, the local launcher end to end on the demo config, the submitit path, the summary."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import iwu.sweep.local as local
import iwu.sweep.slurm as slurm
from iwu.cli import main
from iwu.config.schema import load_config
from iwu.sweep.demo import demo_config_path
from iwu.errors import UserError
from iwu.util.atomic_files import locked
from iwu.sweep import expand, parse_modes, parse_seeds, run_sweep, split_values
from iwu.sweep.outcome import SweepInterrupted
from iwu.sweep.slurm import minutes

MODES = "standard,instance_uncertainty"


def _tiny(tmp_path):
    """The demo config cut to seconds a run: 4 steps at 32x32 on 4 training scenes."""
    return [f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=4",
            "val_every=2", "data.synthetic.n_train=4", "data.synthetic.n_val=2", "data.size=32",
            "data.val_batch_size=2"]


# --- the grid ---------------------------------------------------------------------


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("10-12", [10, 11, 12]), ("0,4,7", [0, 4, 7]),
                                         ("1", [0])])
def test_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "-1", "x", "3-1", "1,1", "2,-3", ""])
def test_bad_seeds_are_one_line(text):
    with pytest.raises(UserError, match="--seeds"):
        parse_seeds(text)


def test_modes():
    assert parse_modes("standard, focal") == ["standard", "focal"]
    for bad in ("standard,bogus", "", "focal,focal"):
        with pytest.raises(UserError, match="--modes"):
            parse_modes(bad)


@pytest.mark.parametrize("value, values", [
    ("a,b", ["a", "b"]), ("1e-4", ["1e-4"]), ("[fog,night]", ["[fog,night]"]),
    ("[fog,night],[rain]", ["[fog,night]", "[rain]"]), ("{a: 1, b: 2},x", ["{a: 1, b: 2}", "x"]),
    ("'a,b',c", ["'a,b'", "c"]),
])
def test_values_split_at_top_level_commas_only(value, values):
    assert split_values(value) == values


def test_a_grid_too_large_is_refused_from_its_shape_before_any_config_is_built(tmp_path, capsys, monkeypatch):
    from iwu.cli import main
    from iwu.sweep import grid

    def built(*args):
        raise AssertionError("a config was built")

    monkeypatch.setattr(grid, "load_config", built)
    axes = [f"optim.weight_decay={','.join(f'{i}e-5' for i in range(1, 11))}",
            *(f"{key}={','.join(str(v) for v in range(1, 11))}" for key in
              ("loss.focal_gamma", "trainer.max_steps", "val_every", "data.batch_size", "trainer.log_every_n_steps"))]
    assert main(["sweep", str(demo_config_path()), "--seeds", "2", "--modes", "standard", *axes, f"out={tmp_path}",
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "the sweep is 2,000,000 runs (2 seeds x 1 modes x 10 optim.weight_decay x 10 loss.focal_gamma" in err
    assert "a sweep takes at most 10,000" in err


def test_the_grid_is_seeds_by_modes_by_each_axis(tmp_path):
    root, points = expand(demo_config_path(), [0, 1], ["standard", "focal"],
                          [*_tiny(tmp_path), "optim.weight_decay=0,1e-4", "loss.focal_gamma=1,2,3", f"out={tmp_path / 'sw'}"])
    assert root == tmp_path / "sw"
    assert len(points) == 2 * 2 * 2 * 3
    names = [p.name for p in points]
    assert len(set(names)) == len(names)
    point = next(p for p in points if p.name == "optim.weight_decay=1e-4,loss.focal_gamma=3/focal/seed1")
    config = point.config
    assert (config.mode, config.seed, config.optim.weight_decay, config.loss.focal_gamma) == ("focal", 1, 1e-4, 3.0)
    assert config.trainer.max_steps == 4 and config.resume is True
    assert point.run == tmp_path / "sw" / point.name
    assert config.experiment == "demo optim.weight_decay=1e-4,loss.focal_gamma=3"  # its own column in a report
    plain = expand(demo_config_path(), [0], ["standard"], _tiny(tmp_path))[1][0]
    assert plain.name == "standard/seed0" and plain.config.experiment == "demo"
    assert plain.run.parts[-4:] == ("runs", "demo", "standard", "seed0")  # runs/<experiment> without out=


def test_an_axis_over_one_member_s_learning_rate(tmp_path):
    _, points = expand(demo_config_path(), [0], ["standard"], [*_tiny(tmp_path), "members.1.lr=1e-3,1e-4"])
    assert [p.name for p in points] == ["members.1.lr=1e-3/standard/seed0", "members.1.lr=1e-4/standard/seed0"]
    assert [[m.lr for m in p.config.members] for p in points] == [[1e-3, 1e-3, 1e-3], [1e-3, 1e-4, 1e-3]]


@pytest.mark.parametrize("override, match", [
    ("seed=3", "--seeds"), ("mode=focal", "--modes"), ("resume=false", "sets it"), ("experiment=x", "sets it"),
    ("val_every=1,1", "distinct"), ("val_every=1,", "distinct"), ("trainer.max_steps=many", "trainer.max_steps"),
    ("novalue", "key=value"),
])
def test_bad_overrides_are_one_line_before_anything_runs(tmp_path, override, match):
    with pytest.raises(UserError, match=match):
        expand(demo_config_path(), [0], ["standard"], [*_tiny(tmp_path), override])


@pytest.mark.parametrize("text, expected", [
    ("90", 90), ("1:30", 2), ("24:00:00", 1440), ("1-00", 1440), ("2-12:30", 3630), ("1-00:00:30", 1441),
])
def test_slurm_time_in_minutes(text, expected):
    assert minutes(text) == expected


@pytest.mark.parametrize("text", ["", "1h", "0", "1:2:3:4", "-5"])
def test_bad_slurm_time(text):
    with pytest.raises(UserError, match="slurm.time"):
        minutes(text)


def test_each_local_run_gets_its_share_of_threads_and_its_gpu(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local.os, "cpu_count", lambda: 16)
    env = local._environment(slot=5, parallel=4, gpus=4)
    assert (env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]) == ("4", "1")
    assert "CUDA_VISIBLE_DEVICES" not in local._environment(slot=1, parallel=4, gpus=1)
    assert "OMP_NUM_THREADS" not in local._environment(slot=0, parallel=1, gpus=0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the user's choice stands
    assert local._environment(slot=5, parallel=4, gpus=2)["CUDA_VISIBLE_DEVICES"] == "2,3"


# --- the local launcher end to end ------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The demo config, 2 seeds x 2 modes, two runs at a time."""
    tmp = tmp_path_factory.mktemp("sweep")
    overrides = [*_tiny(tmp), f"out={tmp / 'sw'}"]
    status = run_sweep(demo_config_path(), seeds="2", modes=MODES, overrides=overrides, parallel=2, progress=False)
    return tmp / "sw", overrides, status


def _finals(root):
    return sorted(str(p.relative_to(root).parent) for p in root.rglob("final.json"))


RUNS = ["instance_uncertainty/seed0", "instance_uncertainty/seed1", "standard/seed0", "standard/seed1"]


@pytest.mark.slow
def test_a_sweep_trains_every_point_in_the_run_layout(swept):
    root, _, status = swept
    assert status == 0
    assert _finals(root) == RUNS
    for name in RUNS:
        mode, seed = name.split("/")
        final = json.loads((root / name / "final.json").read_text())
        assert (final["mode"], final["seed"], final["steps"]) == (mode, int(seed[4:]), 4)
        saved = load_config(root / name / "config.yaml")
        assert saved == load_config(root / "sweep" / "configs" / f"{name}.yaml")  # the run is the point's config
        assert "iwu train" in (root / "sweep" / "logs" / f"{name}.log").read_text()
    summary = json.loads((root / "sweep" / "summary.json").read_text())
    assert sorted((r["name"], r["state"]) for r in summary["runs"]) == [(n, "finished") for n in RUNS]


def test_the_same_command_again_skips_all_four(swept, capsys):
    root, overrides, _ = swept
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "sweep" not in p.parts}
    assert run_sweep(demo_config_path(), seeds="2", modes=MODES, overrides=overrides, progress=False) == 0
    out = capsys.readouterr().out
    assert "4 finished already, 0 to resume, 0 to start" in out
    assert "0 finished, 0 failed, 4 skipped" in out
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "sweep" not in p.parts}
    assert after == before  # nothing trained or rewritten
    summary = json.loads((root / "sweep" / "summary.json").read_text())["runs"]
    assert all(r["state"] == "skipped" and Path(r["log"]).is_file() for r in summary)  # their logs still named


@pytest.mark.slow
def test_a_dry_run_read_in_part_ends_quietly(tmp_path):
    reader = subprocess.Popen([sys.executable, "-m", "iwu", "sweep", str(demo_config_path()), "--seeds", "2000",
                               "--dry-run", f"out={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # as `| head -1` does
    assert reader.wait(timeout=60) in (0, 141)
    assert b"Traceback" not in reader.stderr.read()


def test_report_over_the_sweep_prints_the_table(swept, capsys):
    root = swept[0]
    assert main(["report", str(root)]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("| class"))
    assert "standard" in header and "instance_uncertainty" in header
    miou = next(line for line in table.splitlines() if line.startswith("| mIoU"))
    assert miou.count("(2)") == 2  # two seeds in each column


@pytest.mark.slow
def test_a_run_without_final_json_is_resumed_and_the_others_skipped(swept, tmp_path, capsys):
    import shutil

    root, overrides, _ = swept
    copy = tmp_path / "sw"
    shutil.copytree(root, copy)
    (copy / "standard" / "seed1" / "final.json").unlink()  # as if killed after its last checkpoint
    moved = [o for o in overrides if not o.startswith("out=")] + [f"out={copy}"]
    with pytest.raises(UserError, match="another config"):  # copied runs keep out= of the original
        run_sweep(demo_config_path(), seeds="2", modes=MODES, overrides=moved, progress=False)
    for config in copy.rglob("config.yaml"):  # as if the sweep had been run there
        config.write_text(config.read_text().replace(str(root), str(copy)))
    assert run_sweep(demo_config_path(), seeds="2", modes=MODES, overrides=moved, progress=False) == 0
    out = capsys.readouterr().out
    assert "3 finished already, 1 to resume, 0 to start" in out
    assert "1 finished, 0 failed, 3 skipped" in out
    assert (copy / "standard" / "seed1" / "final.json").exists()


def test_a_changed_config_is_refused_rather_than_mixed_in(swept):
    root, overrides, _ = swept
    with pytest.raises(UserError, match=r"another config than the run's \(trainer.max_steps\).*and 3 more runs"):
        run_sweep(demo_config_path(), seeds="2", modes=MODES, overrides=[*overrides, "trainer.max_steps=5"],
                  progress=False)


def test_one_sweep_at_a_time_in_a_folder(swept):
    root, overrides, _ = swept
    with locked(root / "sweep" / "lock"):
        done = subprocess.run([sys.executable, "-m", "iwu", "sweep", str(demo_config_path()), "--seeds", "2",
                               *overrides], capture_output=True, text=True)
    assert done.returncode == 2
    assert "another sweep over these runs is going on" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_failed_run_is_named_with_its_log_and_error(tmp_path, capsys):
    overrides = [*_tiny(tmp_path), f"out={tmp_path / 'sw'}", "data.batch_size=64"]  # more than 4 scenes
    assert main(["sweep", str(demo_config_path()), "--seeds", "1", "--modes", "standard", *overrides]) == 1
    out = capsys.readouterr().out
    log = tmp_path / "sw" / "sweep" / "logs" / "standard" / "seed0.log"
    assert f"failed: {tmp_path / 'sw' / 'standard' / 'seed0'}  log: {log}" in out
    assert "fewer than batch_size 64" in out  # the run's own one-line error, from its log
    assert "0 finished, 1 failed, 0 skipped" in out


def test_ctrl_c_stops_the_running_processes(tmp_path, monkeypatch):
    point = expand(demo_config_path(), [0], ["standard"], [*_tiny(tmp_path), f"out={tmp_path / 'sw'}"])[1][0]
    # the child answers Ctrl-C even when this suite runs in the background, where SIGINT comes ignored, and
    # says when it does: a signal sent while it still starts would find it ignoring
    ready = tmp_path / "ready"
    child = ("import pathlib, signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
             f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")
    monkeypatch.setattr(local, "train_command", lambda *a: [sys.executable, "-c", child])
    real_sleep, pressed = time.sleep, []

    def sleep(seconds):  # Ctrl-C once, while the run is going
        if ready.exists() and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt
        real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(local.time, "sleep", sleep)
    started = time.monotonic()
    with pytest.raises(SweepInterrupted) as stop:
        local.run_local([point], {point.name: tmp_path / "unused.yaml"}, tmp_path / "logs", progress=False)
    assert time.monotonic() - started < 30
    assert [(o.point.name, o.state) for o in stop.value.outcomes] == [("standard/seed0", "interrupted")]


# --- the SLURM path, on submitit's local executor ---------------------------------


@pytest.mark.slow
def test_the_submitit_path_runs_each_point_as_a_job(tmp_path, capsys):
    overrides = [*_tiny(tmp_path), f"out={tmp_path / 'sw'}", "slurm.gpus_per_job=0"]
    status = run_sweep(demo_config_path(), seeds="1", modes=MODES, overrides=overrides, launcher="slurm",
                       cluster="local", progress=False, slurm_options={"time": "10"})
    assert status == 0, capsys.readouterr().out
    root = tmp_path / "sw"
    assert _finals(root) == ["instance_uncertainty/seed0", "standard/seed0"]
    jobs = json.loads((root / "sweep" / "jobs.json").read_text())
    assert sorted(jobs) == ["instance_uncertainty/seed0", "standard/seed0"]
    summary = json.loads((root / "sweep" / "summary.json").read_text())["runs"]
    assert {r["state"] for r in summary} == {"finished"}
    assert all(r["log"].startswith(str(root / "sweep" / "slurm")) for r in summary)


@pytest.mark.slow
def test_a_failed_job_is_named_with_its_log(tmp_path, capsys):
    overrides = [*_tiny(tmp_path), f"out={tmp_path / 'sw'}", "slurm.gpus_per_job=0", "data.batch_size=64"]
    status = run_sweep(demo_config_path(), seeds="1", modes="standard", overrides=overrides, launcher="slurm",
                       cluster="local", progress=False)
    out = capsys.readouterr().out
    assert status == 1
    assert "0 finished, 1 failed, 0 skipped" in out
    assert str(tmp_path / "sw" / "sweep" / "slurm") in out and "fewer than batch_size 64" in out


@pytest.mark.slow
def test_jobs_still_in_the_queue_are_waited_for_not_submitted_again(tmp_path, monkeypatch, capsys):
    root, points = expand(demo_config_path(), [0, 1], ["standard"], [*_tiny(tmp_path), f"out={tmp_path / 'sw'}"])
    folder = root / "sweep"
    folder.mkdir(parents=True)
    (folder / "jobs.json").write_text(json.dumps({"standard/seed0": "1234", "standard/seed1": "1235"}))

    class Queued:  # job 1234 still runs on the cluster; 1235 is gone
        job_id = "1234"
        paths = type("Paths", (), {"stderr": str(folder / "slurm" / "1234_0_log.err")})
        state = "COMPLETED"

        def done(self):
            (points[0].run).mkdir(parents=True, exist_ok=True)
            (points[0].run / "final.json").write_text("{}")
            return True

        def results(self):
            return [str(points[0].run / "final.json")]

    monkeypatch.setattr(slurm, "_attach", lambda folder, job_id: Queued() if job_id == "1234" else None)
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")  # as on a login node
    real = slurm.make_executor
    monkeypatch.setattr(slurm, "make_executor", lambda *a, **k: real(*a, **{**k, "cluster": "local"}))
    files = {p.name: tmp_path / f"{p.name.replace('/', '_')}.yaml" for p in points}
    for p in points:
        from iwu.config.schema import save_config

        save_config(p.config, files[p.name])
    outcomes = slurm.run_slurm(points, files, folder, points[0].config.slurm.__class__(gpus_per_job=0), 1,
                               cluster="slurm", progress=False, poll=0.5)
    assert "1 job(s) submitted, 1 already in the queue" in capsys.readouterr().out
    assert sorted((o.point.name, o.state) for o in outcomes) == [("standard/seed0", "finished"),
                                                                 ("standard/seed1", "finished")]
    jobs = json.loads((folder / "jobs.json").read_text())
    assert jobs["standard/seed0"] == "1234" and jobs["standard/seed1"] != "1235"


def _fake_slurm(folder, sbatch_says):
    folder.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", sbatch_says)):
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def test_without_slurm_or_when_sbatch_refuses_the_error_is_one_line(tmp_path, monkeypatch, capsys):
    args = ["sweep", str(demo_config_path()), "--seeds", "2", "--modes", "standard", "--launcher", "slurm",
            *_tiny(tmp_path), f"out={tmp_path / 'sw'}"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert main(args) == 2
    assert "sbatch and srun are not on this machine's PATH" in capsys.readouterr().err
    fake = _fake_slurm(tmp_path / "bin", "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    assert main([*args, "--partition", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["iwu sweep: error: sbatch refused the jobs (sbatch: error: invalid partition specified: nope); "
                   "check --partition, --account, --time, --gpus-per-job and slurm.additional"]  # sbatch's line once
    script = next((tmp_path / "sw" / "sweep" / "slurm").glob(".submission_file_*.sh")).read_text()
    assert "#SBATCH --partition=nope" in script
    assert "#SBATCH --array=0-1%2" in script  # every job of the array at once unless --parallel says
    assert "#SBATCH --time=1440" in script and "#SBATCH --gpus-per-node=1" in script


def test_a_missing_import_module_is_one_line_before_anything_runs(tmp_path, capsys):
    args = ["sweep", str(demo_config_path()), "--seeds", "1", *_tiny(tmp_path), f"out={tmp_path / 'sw'}"]
    assert main([*args, "--import", "no_such_module_for_iwu"]) == 2
    assert "iwu sweep: error: --import no_such_module_for_iwu: No module named" in capsys.readouterr().err
    assert not (tmp_path / "sw").exists()


def test_local_runs_go_n_at_a_time_and_count_as_finished_only_with_final_json(tmp_path, monkeypatch):
    _, points = expand(demo_config_path(), [0, 1, 2], ["standard"], [*_tiny(tmp_path), f"out={tmp_path / 'sw'}"])
    # each stand-in run notes when it ran; seeds 0 and 1 write final.json, seed 2 does not
    script = ("import sys, time, pathlib; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)\n"
              "start = time.time(); time.sleep(1.0)\n"
              "(run / 'span').write_text(f'{start} {time.time()}')\n"
              "if not run.name.endswith('2'): (run / 'final.json').write_text('{}')")
    runs = {str(tmp_path / f"{p.name}.yaml"): p.run for p in points}
    monkeypatch.setattr(local, "train_command", lambda config_file, imports: [
        sys.executable, "-c", script, str(runs[str(config_file)])])
    files = {p.name: tmp_path / f"{p.name}.yaml" for p in points}
    outcomes = local.run_local(points, files, tmp_path / "logs", parallel=2, progress=False)
    assert sorted((o.point.name, o.state) for o in outcomes) == [
        ("standard/seed0", "finished"), ("standard/seed1", "finished"), ("standard/seed2", "failed")]
    spans = [tuple(map(float, (p.run / "span").read_text().split())) for p in points]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the first two overlapped
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.05  # the third waited for a free slot


def test_planning_a_sweep_imports_neither_torch_nor_lightning(tmp_path):
    """The parent only reads configs and run folders: `--dry-run` answers at once, and waiting costs no memory."""
    code = ("import sys; from iwu.cli import main\n"
            f"main(['sweep', {str(demo_config_path())!r}, '--seeds', '2', 'out={tmp_path / 'sw'}', '--dry-run'])\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
