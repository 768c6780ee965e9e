"""The paper configs (configs/paper) reproduce the paper's hyper-parameters, checked value by value.

The expected values are written out here from the supplementary material (sections 1-2) and
docs/method.md, section 4, independently of the YAML files and of the schema's defaults, so a changed
default or a slip in a file shows up here. Loading only: no models, no data.
"""

import re
import shlex
from pathlib import Path

import pytest

from iwu.config.schema import load_config
from iwu.data.config import DataConfig, ValExtraConfig
from iwu.config.packaged import packaged_configs_dir

PAPER = packaged_configs_dir() / "paper"  # what an installed iwu carries
BASES = {"base.yaml", "acdc.yaml", "cityscapes.yaml"}

MOBILENET = ("deeplabv3plus_mobilenet", 1e-3)
RESNET50 = ("deeplabv3plus_resnet50", 1e-4)
RESNET101 = ("deeplabv3plus_resnet101", 1e-4)

# file stem -> (dataset, cross-domain validation dataset, members with their lrs, default mode)
EXPERIMENTS = {
    "acdc_mobilenet": ("acdc", "cityscapes", [MOBILENET], "standard"),
    "acdc_resnet50": ("acdc", "cityscapes", [RESNET50], "standard"),
    "acdc_resnet101": ("acdc", "cityscapes", [RESNET101], "standard"),
    "acdc_ensemble": ("acdc", "cityscapes", [RESNET101, RESNET50, MOBILENET], "instance_uncertainty"),
    "cityscapes_mobilenet": ("cityscapes", "acdc", [MOBILENET], "standard"),
    "cityscapes_resnet50": ("cityscapes", "acdc", [RESNET50], "standard"),
    "cityscapes_resnet101": ("cityscapes", "acdc", [RESNET101], "standard"),
    "cityscapes_ensemble": ("cityscapes", "acdc", [RESNET101, RESNET50, MOBILENET], "instance_uncertainty"),
}
MODES = ("standard", "class_weighted", "instance_uncertainty")
ACDC_TRAIN_IMAGES = 1600


def experiment_files():
    return sorted(p for p in PAPER.glob("*.yaml") if p.name not in BASES)


def path_of(stem: str) -> Path:
    return PAPER / f"{stem}.yaml"


def test_every_experiment_file_has_an_expected_row():
    assert [p.stem for p in experiment_files()] == sorted(EXPERIMENTS)
    assert all((PAPER / name).is_file() for name in BASES)


@pytest.mark.parametrize("stem", sorted(EXPERIMENTS))
def test_values_are_the_papers(stem):
    dataset, other, members, mode = EXPERIMENTS[stem]
    c = load_config(path_of(stem))

    assert c.experiment == stem
    assert c.mode == mode
    assert (c.seed, c.out, c.resume) == (0, None, False)  # runs land in runs/<experiment>/<mode>/seed<N>
    assert [(m.name, m.lr) for m in c.members] == members
    assert all(isinstance(m.lr, float) for m in c.members)

    assert c.model.output_stride == 16
    assert c.model.pretrained is True
    assert c.model.bn_momentum == 0.01

    assert c.optim.backbone_lr_scale == 0.1
    assert c.optim.weight_decay == 1e-4
    assert c.optim.poly_power == 0.9
    assert c.optim.min_lr == 1e-6

    assert c.loss.normalize == "all"
    assert c.loss.connectivity == 8

    assert c.val_every == 100
    assert c.trainer.max_epochs == 60
    assert c.trainer.max_steps == -1  # the epochs, not a step cap, set the poly schedule's length
    assert c.trainer.precision in ("32-true", "32", 32)

    assert c.data == DataConfig(
        kind=dataset,
        root=None,
        size=768,
        batch_size=2,
        val_batch_size=1,
        augment=None,  # the paper trains without augmentation
        val_extra=ValExtraConfig(kind=other, root=None),  # no root: no cross-domain validation until given
    )


@pytest.mark.parametrize("stem", sorted(EXPERIMENTS))
def test_roots_from_the_command_line(stem):
    dataset, other, _, _ = EXPERIMENTS[stem]
    c = load_config(path_of(stem), ["data.root=/x", "data.val_extra.root=/y"])
    assert (c.data.kind, c.data.root) == (dataset, "/x")
    assert c.data.val_extra == ValExtraConfig(kind=other, root="/y")  # merged, not replaced


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", sorted(EXPERIMENTS))
def test_every_mode_loads(stem, mode):
    plain = load_config(path_of(stem)).to_dict()
    c = load_config(path_of(stem), [f"mode={mode}"])
    assert c.mode == mode
    assert {**c.to_dict(), "mode": plain["mode"]} == plain  # nothing else moves


@pytest.mark.parametrize("stem", [s for s in EXPERIMENTS if s.startswith("acdc_")])
def test_acdc_runs_48000_iterations(stem):
    c = load_config(path_of(stem))
    batches_per_epoch = ACDC_TRAIN_IMAGES // c.data.batch_size  # the loader drops a last partial batch
    assert batches_per_epoch * c.trainer.max_epochs == 48_000


# --- the commands the files and the README show ------------------------------------------


def commands(text: str) -> list[list[str]]:
    found = re.findall(r"^[#\s]*(iwu train .*)$", text, re.M)
    return [shlex.split(line)[2:] for line in found]


def test_each_file_shows_its_own_command_and_the_modes():
    for path in experiment_files():
        text = path.read_text()
        shown = commands(text)
        assert shown, f"{path.name}: no `iwu train` command in its comment"
        assert all(args[0] == f"configs/paper/{path.name}" for args in shown), path.name
        assert all(mode in text for mode in MODES) and "mode=" in text, path.name


def test_shown_commands_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the commands as written run outside the checkout too, on the packaged files
    texts = [p.read_text() for p in experiment_files()] + [(PAPER / "README.md").read_text()]
    shown = [args for text in texts for args in commands(text)]
    assert len(shown) >= len(EXPERIMENTS)
    for path, *overrides in shown:
        c = load_config(path, overrides)  # a configs/... path found among the packaged configs
        assert c.data.root is not None, f"{path} {overrides}: the command gives no data.root"


def test_readme_names_every_file():
    readme = (PAPER / "README.md").read_text()
    for path in sorted(PAPER.glob("*.yaml")):
        assert f"`{path.name}`" in readme, path.name


# --- the published code's other datasets (configs/kvasir.yaml, configs/voc.yaml) ----------------

PUBLISHED_AUGMENT = [{"random_scale": {"min": 0.5, "max": 2.0}}, {"random_crop": {"size": 513}}, "hflip"]
OTHER_DATASETS = {  # stem -> (val_batch_size, extra data keys): the published main.py's settings
    "kvasir": (4, {"val_fraction": 0.2}),
    "voc": (1, {}),
}


@pytest.mark.parametrize("stem", sorted(OTHER_DATASETS))
def test_other_datasets_take_the_published_settings(stem):
    val_batch, extra = OTHER_DATASETS[stem]
    path = packaged_configs_dir() / f"{stem}.yaml"
    c = load_config(path)
    assert (c.experiment, c.mode) == (stem, "instance_uncertainty")
    assert [(m.name, m.lr) for m in c.members] == [RESNET101, RESNET50, MOBILENET]
    assert (c.model.output_stride, c.model.bn_momentum, c.optim.weight_decay, c.optim.poly_power) == (16, 0.01, 1e-4, 0.9)
    assert (c.trainer.max_steps, c.trainer.max_epochs, c.val_every) == (30_000, -1, 100)
    assert c.data == DataConfig(kind=stem, root=None, size=513, batch_size=16, val_batch_size=val_batch,
                                augment=PUBLISHED_AUGMENT, **extra)
    shown = commands(path.read_text())
    assert shown and all(args[0] == f"configs/{stem}.yaml" for args in shown)
    for _, *overrides in shown:
        assert load_config(path, overrides).data.root is not None
    assert f"`configs/{stem}.yaml`" in (PAPER / "README.md").read_text()
