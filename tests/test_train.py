"""The training engine end to end on synthetic scenes: every mode, the run directory, resume, NaN, the command."""

import json
import math
import os
import signal

import lightning as L
import pytest
import torch
import yaml

from iwu.engine.run_checkpoints import BEFORE_NONFINITE
from iwu.cli import main
from iwu.config.schema import load_config
from iwu.data import SegmentationDataModule
from iwu.errors import Stopped, UserError
from iwu.data.mask_store import MaskWriter
from iwu.engine.optim import poly_lr
from iwu.engine.train import train
from tiny_runs import MEMBERS, tiny_config
from crashing import Crash, CrashAt
from drawn import drawn_figures

MODES = ("standard", "class_weighted", "instance_uncertainty", "offline_masks", "focal")
NAMES = ["deeplabv3plus_mobilenet_0", "deeplabv3plus_mobilenet_1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A config file for tiny runs: 6 training scenes at 32x32 (3 batches an epoch), 2 validation scenes."""
    return tiny_config(tmp_path_factory.mktemp("train"))


def _config(base, out, *overrides):
    return load_config(base, [f"out={out}", *overrides])


@pytest.fixture(scope="module")
def masks(base, tmp_path_factory):
    """Offline masks for every training item, as `iwu masks` would store them."""
    dm = SegmentationDataModule(_config(base, "unused").data)
    dm.prepare_data()
    dm.setup("fit")
    root = tmp_path_factory.mktemp("masks")
    with MaskWriter(root, num_classes=19) as writer:
        for i, name in enumerate(dm.train_set.names):
            writer.add(name, torch.full((32, 32), 0.1 * i))
    return root


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_writes_a_run_directory(base, masks, tmp_path, mode, monkeypatch):
    import iwu.plots.curves

    drawn = drawn_figures(monkeypatch, iwu.plots.curves)
    out = tmp_path / mode
    final = train(_config(base, out, f"mode={mode}", f"loss.masks_dir={masks}"), progress=False)
    assert json.loads((out / "final.json").read_text()) == final
    assert (final["mode"], final["seed"], final["dataset"], final["steps"]) == (mode, 0, "cityscapes", 4)
    assert list(final["results"]) == ["ensemble", *NAMES]
    for scores in final["results"].values():
        assert scores["best_step"] in (3, 4)  # validated every 3 steps, and after the last
        assert len(scores["iou"]) == len(final["classes"]) == 19
        present = [v for v in scores["iou"] if v is not None]
        assert math.isclose(scores["miou"], sum(present) / len(present))
    files = {p.name for p in (out / "checkpoints").iterdir()}
    assert files == {"last.ckpt", "best_ensemble.ckpt", *(f"best_{n}.pt" for n in NAMES)}
    assert load_config(out / "config.yaml").mode == mode
    (curves,) = drawn.values()
    assert list(drawn) == [out / "curves.png"] and (out / "curves.png").is_file()
    assert curves.get_suptitle() == f"tiny / {mode} / seed 0: training, validated on cityscapes/val"
    panels = [ax.get_title() for ax in curves.axes if ax.get_visible()]
    uncertainty = ["most uncertain instance (training batches)", "pixel entropy (training batches)",
                   "instances per image (training batches)"]
    assert panels == ["training loss", "validation mIoU", "learning rate",
                      *(uncertainty if mode == "instance_uncertainty" else [])]
    header = (out / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/ensemble/miou", *(f"val/{n}/miou" for n in NAMES)} <= set(header)
    if mode == "instance_uncertainty":
        assert {"train/most_uncertain_instance", "train/pixel_entropy", "train/instances_per_image"} <= set(header)
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_best_member_checkpoint_holds_only_that_member(base, tmp_path):
    out = tmp_path / "run"
    final = train(_config(base, out, "mode=standard", "trainer.max_steps=3"), progress=False)
    for logs in ("csv", "tensorboard"):  # the resolved config beside the logs (TensorBoard's HPARAMS)
        hparams = yaml.safe_load((out / "logs" / logs / "hparams.yaml").read_text())
        assert hparams["mode"] == "standard" and hparams["trainer"]["max_steps"] == 3
    member = torch.load(out / "checkpoints" / f"best_{NAMES[1]}.pt", weights_only=True)
    assert member["iwu"]["member"] == {**MEMBERS[1], "args": {}} and member["iwu"]["step"] == 3
    assert member["iwu"]["miou"] == final["results"][NAMES[1]]["miou"]
    full = torch.load(out / "checkpoints" / "best_ensemble.ckpt", weights_only=True)
    assert "optimizer_states" not in full and full["iwu"]["members"] == NAMES
    for key, value in member["state_dict"].items():
        assert torch.equal(full["state_dict"][f"members.1.{key}"], value)
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and last["optimizer_states"]


class _RecordLR(L.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append([(g["name"], g["lr"]) for g in trainer.optimizers[0].param_groups])


def test_learning_rate_of_every_group_follows_the_poly_formula(base, tmp_path):
    record = _RecordLR()
    train(_config(base, tmp_path / "run", "mode=standard", "trainer.max_steps=6", "val_every=100"),
          callbacks=[record], progress=False)
    assert len(record.lrs) == 6
    for step, groups in enumerate(record.lrs):
        assert [name for name, _ in groups] == [f"member{i}/{p}" for i in (0, 1) for p in ("backbone", "head")]
        for (name, lr), head in zip(groups, (1e-3, 1e-3, 5e-4, 5e-4)):
            base_lr = head * (0.1 if name.endswith("backbone") else 1.0)
            assert lr == pytest.approx(poly_lr(base_lr, step, 6, 0.9, 1e-6), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [5, 7])  # mid-epoch, and just after an epoch's last batch was saved
def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(base, tmp_path, crash_at):
    args = ("mode=instance_uncertainty", "trainer.max_steps=8", "val_every=3")
    whole = train(_config(base, tmp_path / "whole", *args), progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(_config(base, out, *args), callbacks=[CrashAt(crash_at)], progress=False)
    assert not (out / "final.json").exists()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * (crash_at // 3)
    stale = out / "checkpoints" / ".last.ckpt.k9x2.tmp"  # what a kill -9 in the middle of a checkpoint leaves
    stale.write_bytes(b"half a checkpoint")
    resumed = train(_config(base, out, *args, "resume=true"), progress=False)
    assert not stale.exists()
    assert resumed == {**whole, "experiment": resumed["experiment"]}
    a = torch.load(tmp_path / "whole" / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    b = torch.load(out / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_guards(base, tmp_path):
    out = tmp_path / "run"
    train(_config(base, out, "mode=standard", "trainer.max_steps=2"), progress=False)
    with pytest.raises(UserError, match="holds a run already; add resume=true"):
        train(_config(base, out, "mode=standard", "trainer.max_steps=2"), progress=False)
    with pytest.raises(UserError, match=r"another config than the run's \(seed\)"):
        train(_config(base, out, "mode=standard", "trainer.max_steps=2", "seed=1", "resume=true"), progress=False)
    again = train(_config(base, out, "mode=standard", "trainer.max_steps=2", "resume=true"), progress=False)
    assert again == json.loads((out / "final.json").read_text())  # finished: nothing to do


def test_a_run_directory_is_locked_by_the_process_training_it(base, tmp_path):
    from iwu.util.atomic_files import owned
    from iwu.engine.run_dir import LOCK

    out = tmp_path / "run"
    with owned(out / LOCK, "held"):  # as another `iwu train out=SAME` would hold it
        with pytest.raises(UserError, match=rf"{out}: another iwu train is writing this run \(process {os.getpid()}\)"):
            train(_config(base, out, "mode=standard", "trainer.max_steps=2"), progress=False)
    assert not (out / "final.json").exists() and not (out / "logs").exists()  # nothing of the refused run
    train(_config(base, out, "mode=standard", "trainer.max_steps=2"), progress=False)  # free again
    assert (out / "final.json").is_file()


class _PoisonAt(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            batch["image"][:] = float("nan")


def test_non_finite_loss_stops_with_one_line_naming_step_and_member(base, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        train(_config(base, out, "mode=standard", "trainer.max_steps=8"), callbacks=[_PoisonAt(4)], progress=False)
    message = str(err.value)
    assert f"step 5, member {NAMES[0]}: the loss is nan" in message and "\n" not in message
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    good = torch.load(out / "checkpoints" / BEFORE_NONFINITE, weights_only=True)
    assert good["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())
    assert not (out / "final.json").exists()


def test_command_line(base, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", str(base), f"out={out}", "mode=focal", "trainer.max_steps=1"]) == 0
    assert json.loads((out / "final.json").read_text())["mode"] == "focal"
    assert "best ensemble mIoU" in capsys.readouterr().out
    assert main(["train", str(base), "trainer.max_stesp=1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "iwu train: error: trainer.max_stesp: unknown key; did you mean trainer.max_steps?")
    assert main(["train", str(base), "val_every=often"]) == 2
    assert "val_every: expected an integer" in capsys.readouterr().err
    assert main(["train", str(base), f"out={tmp_path / 'x'}", "mode=offline_masks"]) == 2
    assert "loss.masks_dir" in capsys.readouterr().err
    assert main(["train", str(base), f"out={tmp_path / 'y'}", "trainer.precision=bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # Lightning's complaint, as one line
    assert err.startswith("iwu train: error: trainer: Precision 'bogus' is invalid")


AUGMENT = "data.augment=[hflip, {random_scale: {min: 0.5, max: 2.0}}, {random_crop: {size: 24}}, " \
          "{color_jitter: {brightness: 0.3}}]"


class _RecordBatches(L.Callback):
    def __init__(self):
        self.batches = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches[trainer.global_step] = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_resumed_run_with_augmentation_sees_the_images_of_an_uninterrupted_one(base, tmp_path):
    args = ("mode=standard", "trainer.max_steps=5", "val_every=3", AUGMENT)
    seen = _RecordBatches()
    whole = train(_config(base, tmp_path / "whole", *args), callbacks=[seen], progress=False)
    assert seen.batches[0]["image"].shape == (2, 3, 24, 24)  # cropped: augmentation is on
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(_config(base, out, *args), callbacks=[CrashAt(4)], progress=False)  # mid-epoch
    again = _RecordBatches()
    resumed = train(_config(base, out, *args, "resume=true"), callbacks=[again], progress=False)
    assert sorted(again.batches) == [3, 4]
    for step, batch in again.batches.items():
        assert all(torch.equal(batch[k], seen.batches[step][k]) for k in ("image", "label"))
    assert resumed == {**whole, "experiment": resumed["experiment"]}
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_offline_masks_train_on_stored_masks_augmented_with_their_items(base, tmp_path):
    """Masks that are 0.1 x each item's label: after flips, scales and crops they still are, in every batch."""
    import numpy as np

    dm = SegmentationDataModule(_config(base, "unused").data)
    dm.prepare_data()
    dm.setup("fit")
    with MaskWriter(tmp_path / "masks", num_classes=19) as writer:
        for i, name in enumerate(dm.train_set.names):
            y = dm.train_set.read(i)[1].astype(np.float64)
            writer.add(name, np.where(y == 255, 0, 0.1 * y))
    seen = _RecordBatches()
    train(_config(base, tmp_path / "run", "mode=offline_masks", f"loss.masks_dir={tmp_path / 'masks'}",
                  "trainer.max_steps=3", AUGMENT), callbacks=[seen], progress=False)
    assert len(seen.batches) == 3
    for batch in seen.batches.values():
        y, u = batch["label"], batch["mask"]
        assert u.shape == y.shape == (2, 24, 24)
        known = y != 255
        assert known.any() and torch.allclose(u[known], 0.1 * y[known].float(), atol=1e-4)


@pytest.mark.slow
def test_resumed_run_keeps_the_metrics_of_its_first_part(base, tmp_path):
    import csv

    args = ("mode=standard", "trainer.max_steps=7", "val_every=3")
    whole = tmp_path / "whole"
    train(_config(base, whole, *args), progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(_config(base, out, *args), callbacks=[CrashAt(5)], progress=False)
    train(_config(base, out, *args, "resume=true"), progress=False)

    def table(run):
        with (run / "logs" / "csv" / "metrics.csv").open() as f:
            return [(r["step"], r["train/loss"], r["val/ensemble/miou"]) for r in csv.DictReader(f)]

    assert table(out) == table(whole)  # every step once, the same numbers


class _TinySegmenter(torch.nn.Module):
    """A user's own model: any module with `.backbone` and `.classifier` that returns (B,C,H,W) logits."""

    def __init__(self, num_classes):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                            torch.nn.ReLU())
        self.classifier = torch.nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.backbone(x))


def test_a_registered_user_model_trains_from_a_config(base, tmp_path):
    from iwu.models import MODELS, register_model

    if "test_tiny_segmenter" not in MODELS:
        @register_model("test_tiny_segmenter")
        def tiny(num_classes, *, output_stride=16, pretrained=True):
            return _TinySegmenter(num_classes)

    members = "members=[{name: test_tiny_segmenter, lr: 0.01}, {name: deeplabv3plus_mobilenet, lr: 0.001}]"
    final = train(_config(base, tmp_path / "run", members, "trainer.max_steps=2"), progress=False)
    assert list(final["results"]) == ["ensemble", "test_tiny_segmenter", "deeplabv3plus_mobilenet"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "best_test_tiny_segmenter.pt", weights_only=True)
    assert state["state_dict"]["classifier.weight"].shape == (19, 8, 1, 1)


def test_precision_and_channels_last_switches(base, tmp_path):
    final = train(_config(base, tmp_path / "run", "trainer.precision=bf16-mixed", "trainer.channels_last=true",
                          "trainer.max_steps=2"), progress=False)
    assert final["steps"] == 2 and final["results"]["ensemble"]["miou"] >= 0


def test_import_option_registers_user_models_before_the_config_is_read(base, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_models_for_iwu.py").write_text(
        "from iwu.models import register_model, MODELS\n"
        "from iwu.models import deeplabv3plus_mobilenet\n"
        "if 'my_mobilenet' not in MODELS:\n"
        "    register_model('my_mobilenet')(deeplabv3plus_mobilenet)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["train", str(base), f"out={tmp_path / 'run'}", "members=[{name: my_mobilenet, lr: 0.001}]",
            "trainer.max_steps=1"]
    assert main([*args, "--import", "my_models_for_iwu"]) == 0
    assert list(json.loads((tmp_path / "run" / "final.json").read_text())["results"]) == ["ensemble", "my_mobilenet"]
    assert main([*args, "--import", "no_such_module_here"]) == 2
    assert "--import no_such_module_here" in capsys.readouterr().err


def test_a_missing_offline_mask_is_one_line_naming_the_item(base, tmp_path, capsys):
    with MaskWriter(tmp_path / "masks", num_classes=19) as writer:
        writer.add("pixelstadt/pixelstadt_000000_000019", torch.zeros(32, 32))
    args = ["train", str(base), f"out={tmp_path / 'run'}", "mode=offline_masks",
            f"loss.masks_dir={tmp_path / 'masks'}", "trainer.max_steps=3"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars of the data
    assert err.startswith("iwu train: error: ") and "no mask for item" in err and str(tmp_path / "masks") in err


def test_sync_batchnorm_reaches_the_trainer(base, tmp_path):
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from iwu.engine.train import build_datamodule, build_trainer

    for value, expected in (("true", TorchSyncBatchNorm), ("false", type(None))):
        config = _config(base, tmp_path / value, f"trainer.sync_batchnorm={value}", "trainer.strategy=ddp",
                         "trainer.devices=1")
        trainer = build_trainer(config, tmp_path / value, build_datamodule(config), [], progress=False)
        assert type(trainer.strategy._layer_sync) is expected  # Lightning converts the BN layers under DDP


def test_resume_ignores_where_a_run_is_submitted(base, tmp_path):
    from iwu.engine.run_dir import check_run_dir

    train(_config(base, tmp_path / "run", "trainer.max_steps=1"), progress=False)
    moved = _config(base, tmp_path / "run", "trainer.max_steps=1", "resume=true", "slurm.partition=other",
                    "slurm.time='2:00:00'")
    check_run_dir(moved, tmp_path / "run")  # the slurm section says where, not what: no refusal
    with pytest.raises(UserError, match=r"another config than the run's \(trainer.max_steps\)"):
        check_run_dir(_config(base, tmp_path / "run", "trainer.max_steps=2", "resume=true"), tmp_path / "run")


@pytest.mark.slow
def test_a_run_that_builds_the_cache_ends_like_one_that_finds_it_built(base, tmp_path):
    args = ("mode=standard", "trainer.max_steps=2", f"data.cache_dir={tmp_path / 'fresh_cache'}")
    first = train(_config(base, tmp_path / "first", *args), progress=False)  # builds the cache
    second = train(_config(base, tmp_path / "second", *args), progress=False)  # reads it
    assert first == second


class _SignalAt(L.Callback):
    """Stops training at a step as a scheduler (SIGTERM) or a user (Ctrl-C) would."""

    def __init__(self, step, how):
        self.step, self.how = step, how

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to Lightning's own handler
            else:
                raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize("how, status, name", [("sigterm", 143, "SIGTERM"), ("ctrl-c", 130, "Ctrl-C")])
def test_a_signal_stops_the_run_unfinished_with_the_shells_status(base, tmp_path, how, status, name):
    out = tmp_path / "run"
    with pytest.raises(Stopped) as err:
        train(_config(base, out, "mode=standard", "trainer.max_steps=8"), callbacks=[_SignalAt(5, how)],
              progress=False)
    assert err.value.status == status
    assert str(err.value).startswith(f"{out}: stopped by {name} at step ")
    assert "the same command with resume=true continues it from its checkpoint" in str(err.value)  # validated at 3
    assert not (out / "final.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again
    final = train(_config(base, out, "mode=standard", "trainer.max_steps=8", "resume=true"), progress=False)
    assert final["steps"] == 8 and (out / "final.json").is_file()


def test_the_command_exits_with_the_signals_status(monkeypatch, capsys, base):
    import iwu.engine.train

    def stopped(config, **kwargs):
        raise Stopped("runs/x: stopped by SIGTERM at step 7, unfinished", 143)

    monkeypatch.setattr(iwu.engine.train, "train", stopped)
    assert main(["train", str(base)]) == 143
    assert capsys.readouterr().err == "iwu train: runs/x: stopped by SIGTERM at step 7, unfinished\n"


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_ones(base, tmp_path, monkeypatch):
    import errno

    def full(obj, f, *args, **kwargs):  # as torch.save fails on a full disk: a RuntimeError over the OSError
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    class FillTheDisk(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 4:
                monkeypatch.setattr(torch, "save", full)

    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"checkpoints/.*: no space left on its disk to write it \(the file there "
                                        r"before is intact\)"):
        train(_config(base, out, "mode=standard", "trainer.max_steps=8"), callbacks=[FillTheDisk()], progress=False)
    monkeypatch.undo()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not list((out / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_resume_refuses_a_damaged_crafted_or_foreign_last_checkpoint(base, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(_config(base, out, "mode=standard", "trainer.max_steps=6"), callbacks=[CrashAt(4)], progress=False)
    last = out / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    resume = _config(base, out, "mode=standard", "trainer.max_steps=6", "resume=true")

    saved = torch.load(last, weights_only=True)
    name = next(k for k, v in saved["state_dict"].items() if v.is_floating_point())
    saved["state_dict"][name].view(-1)[0] += 1.0  # a changed number under the old digest
    torch.save(saved, last)
    with pytest.raises(UserError, match="last.ckpt: its weights differ from the digest"):
        train(resume, progress=False)

    torch.save({"state_dict": {}, "x": Crash()}, last)
    with pytest.raises(UserError, match="last.ckpt: refused: it holds code"):
        train(resume, progress=False)

    other = tmp_path / "other"
    one = "members=[{name: deeplabv3plus_mobilenet, lr: 0.001}]"
    with pytest.raises(Crash):
        train(_config(base, other, "mode=standard", "trainer.max_steps=6", one), callbacks=[CrashAt(4)],
              progress=False)
    last.write_bytes((other / "checkpoints" / "last.ckpt").read_bytes())  # another run's checkpoint
    with pytest.raises(UserError, match="a checkpoint of members deeplabv3plus_mobilenet, not this run's "
                                        "deeplabv3plus_mobilenet, deeplabv3plus_mobilenet"):
        train(resume, progress=False)

    weights_only = torch.load(out / "checkpoints" / "best_ensemble.ckpt", weights_only=True)
    weights_only["global_step"] = 3  # as a hand-made or best checkpoint copied over last.ckpt
    torch.save(weights_only, last)
    with pytest.raises(UserError, match="last.ckpt: holds weights only .no optimiser or loop state."):
        train(resume, progress=False)

    last.write_bytes(good)
    assert train(resume, progress=False)["steps"] == 6


def test_a_run_shorter_than_val_every_validates_and_checkpoints_its_last_step(base, tmp_path):
    out = tmp_path / "run"
    final = train(_config(base, out, "mode=standard", "trainer.max_steps=2", "val_every=100"), progress=False)
    assert final["results"]["ensemble"]["best_step"] == 2
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_logged_steps_count_from_one_as_final_json_does(base, tmp_path):
    import csv

    out = tmp_path / "run"
    final = train(_config(base, out, "mode=standard", "trainer.max_steps=7", "val_every=3"), progress=False)
    with (out / "logs" / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    trained = [int(r["step"]) for r in rows if r["train/loss"]]
    validated = [int(r["step"]) for r in rows if r["val/ensemble/miou"]]
    assert trained == list(range(1, 8)) and validated == [3, 6, 7]  # after 3 and 6 steps, and at the end
    best = final["results"]["ensemble"]
    row = next(r for r in rows if r["val/ensemble/miou"] and int(r["step"]) == best["best_step"])
    assert float(row["val/ensemble/miou"]) == pytest.approx(best["miou"])
    # the ensemble's IoU of each class at every validation, the best one's equal to final.json's
    classes = final["classes"]
    for name, iou in zip(classes, best["iou"]):
        column = f"val/ensemble/iou/{name}"
        assert (float(row[column]) if row.get(column) else None) == pytest.approx(iou)
        if iou is not None:  # scored at the best validation: a class in the set, scored at every one
            assert [int(r["step"]) for r in rows if r.get(column)] == [3, 6, 7]
    assert any(iou is not None for iou in best["iou"])
    # the learning rate each step applied, per member and part: the poly schedule from the member's rate
    for column, base_lr in (("lr/member0/head", 1e-3), ("lr/member1/head", 5e-4), ("lr/member1/backbone", 5e-5)):
        logged = [float(r[column]) for r in rows if r["train/loss"]]
        assert logged == pytest.approx([poly_lr(base_lr, step - 1, 7) for step in trained], rel=1e-6)
