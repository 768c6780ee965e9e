"""One run on two CPU processes (DDP over gloo): same weights on both ranks, global metrics, a NaN stops both."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iwu.config.schema import load_config
from iwu.data import SegmentationDataModule
from iwu.inference.evaluation import run_evaluate
from tiny_runs import tiny_config

pytestmark = pytest.mark.slow  # processes and whole runs: `make test-fast` leaves them out

WORKER = Path(__file__).parent / "helpers" / "ddp_worker.py"


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    """8 training scenes (2 batches of 2 per rank and epoch) and 3 validation scenes (2 on rank 0, 1 on rank 1)."""
    return tiny_config(tmp_path_factory.mktemp("ddp"), "ddp", experiment="ddp", mode="instance_uncertainty",
                       val_every=2, data={"synthetic": {"n_train": 8, "n_val": 3, "width": 64}, "batch_size": 2,
                                          "val_batch_size": 2},
                       trainer={"max_steps": 3, "devices": 2, "strategy": "ddp"})


def _run_worker(config_path, out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The worker in its own process group, so a hung rank is killed with it rather than outliving the test."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(config_path), str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the two-process run did not end within {timeout} s (a rank waiting for the other?)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _probes(out: Path) -> list[dict]:
    return [json.loads((out / f"probe_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_run(config_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_run")
    done = _run_worker(config_path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_both_ranks_hold_the_same_weights_after_every_step(ddp_run):
    rank0, rank1 = _probes(ddp_run)
    assert len(rank0["digests"]) == 3
    assert rank0["digests"] == rank1["digests"]
    assert len(set(rank0["digests"])) == 3  # the weights did move at every step


def test_each_rank_trains_on_its_own_half_of_the_epoch(config_path, ddp_run):
    rank0, rank1 = _probes(ddp_run)
    first_epoch = [sum(p["names"][:2], []) for p in (rank0, rank1)]  # 8 scenes / 2 ranks / batch 2: 2 steps
    dm = SegmentationDataModule(load_config(config_path).data)
    dm.setup("fit")
    assert not set(first_epoch[0]) & set(first_epoch[1])
    assert sorted(first_epoch[0] + first_epoch[1]) == sorted(dm.train_set.names)


def test_validation_counts_every_image_once_and_every_rank_keeps_the_global_scores(config_path, ddp_run):
    rank0, rank1 = _probes(ddp_run)
    dm = SegmentationDataModule(load_config(config_path).data)
    dm.setup("validate")
    labels = [torch.as_tensor(np.asarray(dm.val_sets[0][i]["label"])) for i in range(len(dm.val_sets[0]))]
    per_image = [int((lab != 255).sum()) for lab in labels]
    # rank 0 scored images 0 and 2, rank 1 image 1, at both validations (steps 2 and 3)
    assert rank0["pixels"] == [per_image[0] + per_image[2]] * 2
    assert rank1["pixels"] == [per_image[1]] * 2
    assert rank0["latest"] == rank1["latest"]


def test_scores_in_final_json_are_those_of_the_whole_validation_set(config_path, ddp_run, tmp_path):
    run = ddp_run / "run"
    final = json.loads((run / "final.json").read_text())["results"]["ensemble"]
    root = load_config(config_path).data.root
    assert run_evaluate(run, f"cityscapes:{root}") == 0  # one process, every image
    ours = json.loads((run / "eval_cityscapes.json").read_text())["results"]["ensemble"]
    assert ours["miou"] == pytest.approx(final["miou"], abs=1e-12)
    assert ours["iou"] == pytest.approx(final["iou"], abs=1e-12)


def test_a_nan_on_one_rank_stops_both_at_that_step(config_path, tmp_path):
    done = _run_worker(config_path, tmp_path, "2")  # rank 1 alone sees NaN images at step 2
    assert done.returncode == 2
    assert "step 2, member deeplabv3plus_mobilenet_0: the loss is nan" in done.stderr
    rank0, rank1 = _probes(tmp_path)
    assert len(rank0["digests"]) == len(rank1["digests"]) == 1  # step 1 done, step 2 stopped on both
    kept = torch.load(tmp_path / "run" / "checkpoints" / "before_nonfinite.ckpt", weights_only=True)
    assert kept["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())
