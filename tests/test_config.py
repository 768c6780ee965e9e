"""Run configuration: paper defaults, overrides, base files, one-line errors, round trip."""

from pathlib import Path

import pytest

from iwu.config.schema import MemberConfig, RunConfig, load_config, save_config
from iwu.engine.run_dir import run_dir
from iwu.data.config import DataConfig, ValExtraConfig
from iwu.errors import UserError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def empty(tmp_path):
    return write(tmp_path / "empty.yaml", "")


def test_defaults_are_the_papers(empty):
    c = load_config(empty)
    assert c == RunConfig()
    assert c.mode == "instance_uncertainty" and c.val_every == 100 and c.seed == 0
    assert c.members == [MemberConfig("deeplabv3plus_resnet101", 1e-4)]
    assert (c.model.output_stride, c.model.pretrained, c.model.bn_momentum) == (16, True, 0.01)
    assert (c.optim.weight_decay, c.optim.backbone_lr_scale, c.optim.poly_power, c.optim.min_lr) == (
        1e-4, 0.1, 0.9, 1e-6
    )  # fmt: skip
    assert (c.loss.normalize, c.loss.connectivity, c.loss.backend, c.loss.focal_gamma) == ("all", 8, "auto", 2.0)
    assert (c.trainer.max_epochs, c.trainer.max_steps, c.trainer.precision) == (60, -1, "32-true")
    assert c.data == DataConfig() and (c.data.size, c.data.batch_size, c.data.augment) == (768, 2, None)


def test_file_values_and_yaml_1_1_floats(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        "experiment: acdc\nmembers:\n  - {name: deeplabv3plus_mobilenet, lr: 1e-3}\n"
        "optim: {weight_decay: 0}\ndata: {kind: acdc, root: /data/acdc, batch_size: 2}\n",
    )
    c = load_config(path)
    assert c.experiment == "acdc"
    assert c.members == [MemberConfig("deeplabv3plus_mobilenet", 1e-3)]
    assert isinstance(c.members[0].lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert c.optim.weight_decay == 0.0 and isinstance(c.optim.weight_decay, float)
    assert c.data == DataConfig(kind="acdc", root="/data/acdc", batch_size=2)


def test_overrides_of_each_kind(empty):
    c = load_config(
        empty,
        [
            "seed=3",
            "resume=true",
            "mode=standard",
            "val_every=50",
            "trainer.max_steps=20",
            "trainer.devices=[0, 1]",
            "optim.min_lr=1e-7",
            "data.root=/data/acdc",
            "data.val_extra.kind=cityscapes",  # an optional section, null by default, set key by key
            "data.val_extra.root=/data/cityscapes",
            "members=[{name: x, lr: 1e-3}, {name: y, lr: 0.01}]",
            "out=runs/x",
            "loss.masks_dir=",
        ],
    )
    assert (c.seed, c.resume, c.mode, c.val_every) == (3, True, "standard", 50)
    assert c.trainer.max_steps == 20 and c.trainer.devices == [0, 1]
    assert c.optim.min_lr == 1e-7
    assert c.data == DataConfig(root="/data/acdc", val_extra=ValExtraConfig("cityscapes", "/data/cityscapes"))
    assert c.members == [MemberConfig("x", 1e-3), MemberConfig("y", 0.01)]
    assert c.out == "runs/x" and c.loss.masks_dir is None


def test_base_inheritance_merges_mappings_and_replaces_lists(tmp_path):
    (tmp_path / "shared").mkdir()
    write(
        tmp_path / "shared" / "paper.yaml",
        "experiment: paper\nval_every: 100\n"
        "members: [{name: a, lr: 1e-4}, {name: b, lr: 1e-4}]\n"
        "trainer: {max_epochs: 60, precision: 32-true}\n"
        "data: {kind: acdc, conditions: [fog, night], batch_size: 2}\n",
    )
    write(tmp_path / "shared" / "ensemble.yaml", "base: paper.yaml\nexperiment: ensemble\n")
    child = write(
        tmp_path / "child.yaml",
        "base: shared/ensemble.yaml\nmembers: [{name: c, lr: 1e-3}]\ntrainer: {max_epochs: 5}\n"
        "data: {root: /d, conditions: [rain]}\n",
    )
    c = load_config(child, ["trainer.precision=bf16-mixed"])
    assert c.experiment == "ensemble" and c.val_every == 100
    assert c.members == [MemberConfig("c", 1e-3)]  # a list is replaced whole
    assert (c.trainer.max_epochs, c.trainer.precision) == (5, "bf16-mixed")
    assert c.data == DataConfig(kind="acdc", conditions=["rain"], batch_size=2, root="/d")


def test_round_trip_and_run_dir(tmp_path, empty):
    c = load_config(empty, ["experiment=acdc", "seed=7", "data.root=/d", "trainer.devices=2", "loss.normalize=valid"])
    assert run_dir(c) == Path("runs/acdc/instance_uncertainty/seed7")
    saved = save_config(c, tmp_path / "run" / "config.yaml")
    assert load_config(saved) == c
    assert load_config(saved).to_dict() == c.to_dict()
    assert not [p for p in saved.parent.iterdir() if p.name.endswith(".tmp")]
    assert run_dir(load_config(saved, ["out=elsewhere/x"])) == Path("elsewhere/x")


def test_list_items_are_set_by_position(empty):
    c = load_config(empty, ["members=[{name: x, lr: 1e-3}, {name: y, lr: 0.01}]", "members.1.lr=2e-4",
                            "members.0.name=z", "trainer.devices=[0, 1]", "trainer.devices.1=3"])
    assert c.members == [MemberConfig("z", 1e-3), MemberConfig("y", 2e-4)] and c.trainer.devices == [0, 3]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_step=5"], r"^trainer\.max_step: unknown key; did you mean trainer\.max_steps\?$"),
        (["seeed=1"], r"^seeed: unknown key; did you mean seed\?$"),
        (["zzz=1"], r"^zzz: unknown key; known keys: experiment, seed"),
        (["seed=abc"], r"^seed: expected an integer, got 'abc'$"),
        (["seed=true"], r"^seed: expected an integer, got True$"),  # bool is not an int
        (["seed=1.5"], r"^seed: expected an integer"),
        (["resume=3"], r"^resume: expected true or false"),
        (["optim.min_lr=fast"], r"^optim\.min_lr: expected a number, got 'fast'"),
        (["optim.min_lr=.nan"], r"^optim\.min_lr: expected a number"),
        (["out=3"], r"^out: expected a string or null, got 3"),
        (["mode=instance_uncertanty"], r"^mode: unknown mode 'instance_uncertanty'; did you mean instance_uncertainty\? "
                                       r"\(modes: ce_dice, ce_lovasz, class_weighted, dice, .*register_mode and --import\)$"),
        (["loss.normalize=some"], r"^loss\.normalize: expected one of all, valid, got 'some'"),
        (["loss.backend=gpu"], r"^loss\.backend: expected one of auto, cc3d, torch"),
        (["loss.connectivity=6"], r"^loss\.connectivity: expected one of 4, 8"),
        (["model.output_stride=0"], r"^model\.output_stride: expected an integer >= 1"),
        (["val_every=0"], r"^val_every: expected an integer >= 1, got 0$"),
        (["members=[]"], r"^members: expected at least one member"),
        (["members=[{name: a, lr: 0}]"], r"^members\[0\]\.lr: expected a number > 0, got 0\.0$"),
        (["members=[{name: a, lr: -1e-3}]"], r"^members\[0\]\.lr: expected a number > 0"),
        (["members=[{name: a}]"], r"^members\[0\]\.lr: missing; expected a number$"),
        (["members=[{name: a, lr: 1, momentum: 2}]"], r"^members\[0\]\.momentum: unknown key"),
        (["members=deeplab"], r"^members: expected a list, got 'deeplab'$"),
        (["trainer=5"], r"^trainer: expected a mapping, got 5$"),
        (["trainer.devices=true"], r"^trainer\.devices: expected an integer or a string or a list"),
        (["data=[1]"], r"^data: expected a mapping"),
        (["seed.x=1"], r"^seed\.x: seed is not a section of keys"),
        (["slurm.time=24:00:00"], r"^slurm\.time: expected a string, got the number 86400; quote it"),
        (["experiment=2024"], r"^experiment: expected a string, got the number 2024; quote it"),
        (["members.1.lr=1"], r"^members\.1\.lr: '1' is not a position in its list of 1 item\(s\), counted from 0$"),
        (["members.x.lr=1"], r"^members\.x\.lr: 'x' is not a position in its list of 1"),
        (["trainer.devices=[0]", "trainer.devices.0.x=1"], r"^trainer\.devices\.0\.x: trainer\.devices\.0 is not a section"),
        (["seed"], r"^override 'seed': expected key=value"),
        (["=3"], r"^override '=3': expected key=value"),
        (["trainer..max_steps=3"], r"expected key=value"),
        (["seed=[1"], r"^seed: cannot read the value"),
    ],
)
def test_bad_overrides_are_one_line_user_errors(empty, overrides, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(empty, overrides)
    assert "\n" not in str(info.value)


def test_bad_keys_in_a_file_name_the_dotted_key(tmp_path):
    path = write(tmp_path / "c.yaml", "trainer:\n  max_step: 5\n")
    with pytest.raises(UserError, match=r"^trainer\.max_step: unknown key; did you mean trainer\.max_steps\?$"):
        load_config(path)
    path = write(tmp_path / "d.yaml", "loss:\n  normalize: none\n")
    with pytest.raises(UserError, match=r"^loss\.normalize: expected one of all, valid"):
        load_config(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("seed: [1\n", r"bad\.yaml: invalid YAML at line \d"),
        ("- 1\n- 2\n", r"bad\.yaml: expected a mapping of keys at the top level, got list"),
        ("base: 3\n", r"bad\.yaml: base: expected a file name, got 3"),
        ("base: missing.yaml\n", r"bad\.yaml: base: missing\.yaml: no file .*missing\.yaml, nor a config that ships"),
    ],
)
def test_bad_files_name_the_file(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(write(tmp_path / "bad.yaml", text))
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: cannot read the config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match=r"c\.yaml: cannot read the config \(not UTF-8"):
        (tmp_path / "c.yaml").write_bytes(b"seed: \xff\xfe\n")
        load_config(tmp_path / "c.yaml")
    with pytest.raises(UserError, match=r"cannot read the config"):
        load_config(tmp_path)  # a folder


def test_a_base_cycle_is_a_user_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(UserError, match=r"a\.yaml: base cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(UserError, match="base cycle"):
        load_config(tmp_path / "self.yaml")


def test_precision_takes_lightning_numbers_and_names(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("trainer: {precision: 32}\n")
    assert load_config(path).trainer.precision == 32
    assert load_config(path, ["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"


# --- hostile configs: one line, no hang, no runaway memory -------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_base_that_is_a_device_is_refused_before_it_is_read(tmp_path, device, capsys):
    from iwu.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"base: {device}\n")
    for argv in (["config", "--show", str(config)], ["train", str(config)]):
        assert main(argv) == 2
        assert f"{device}: cannot read the config (not a regular file" in capsys.readouterr().err


def test_a_config_nested_thousands_deep_and_a_5000_digit_integer_are_one_line(tmp_path, capsys):
    from iwu.cli import main

    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    digits = tmp_path / "digits.yaml"
    digits.write_text("seed: " + "9" * 5000 + "\n")
    for path, words in ((deep, "nested too deeply to read"), (digits, "a value YAML cannot convert")):
        assert main(["config", "--show", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert main(["config", "--show", "demo", "seed=" + "9" * 5000]) == 2


def test_an_experiment_name_longer_than_a_name_is_refused(tmp_path):
    with pytest.raises(UserError, match="experiment: expected a name of at most 120 characters"):
        load_config("demo", ["experiment=" + "x" * 121])
    assert load_config("demo", ["experiment=" + "x" * 120]).experiment == "x" * 120


def test_base_finds_a_packaged_config_and_a_file_beside_wins(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: demo\nseed: 5\n")
    config = load_config(tmp_path / "mine.yaml")
    assert (config.seed, config.experiment) == (5, load_config("demo").experiment)
    (tmp_path / "demo").write_text("experiment: beside\n")  # a file of that name beside the config wins
    assert load_config(tmp_path / "mine.yaml").experiment == "beside"
    (tmp_path / "other.yaml").write_text("base: paper/nope\n")
    with pytest.raises(UserError, match=r"base: paper/nope: no file .*paper/nope, nor a config that ships with iwu"):
        load_config(tmp_path / "other.yaml")
