"""The config's data section: every key typed and checked when the config loads, saved runs still loading."""

import pytest
import yaml

from iwu.cli import main
from iwu.config.schema import config_from_dict, load_config, save_config
from iwu.data.config import DataConfig, SyntheticConfig, ValExtraConfig
from iwu.sweep.demo import demo_config_path
from iwu.errors import UserError
from iwu.engine.run_dir import check_run_dir


@pytest.fixture
def empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.bach_size=4"], r"^data\.bach_size: unknown key; did you mean data\.batch_size\?$"),
        (["data.size=abc"], r"^data\.size: expected an integer, got 'abc'$"),
        (["data.size=0"], r"^data\.size: expected an integer >= 1, got 0$"),
        (["data.size=4097"], r"^data\.size: expected an integer from 1 to 4096 \(the largest image side\), got 4097$"),
        (["data.batch_size=0"], r"^data\.batch_size: expected an integer >= 1, got 0$"),
        (["data.val_batch_size=1.5"], r"^data\.val_batch_size: expected an integer, got 1\.5$"),
        (["data.num_workers=-1"], r"^data\.num_workers: expected an integer >= 0, got -1$"),
        (["data.cache_workers=-2"], r"^data\.cache_workers: expected an integer >= 0, got -2$"),
        (["data.cache=0"], r"^data\.cache: expected true or false, got 0$"),
        (["data.pin_memory=3"], r"^data\.pin_memory: expected true or false or null, got 3$"),
        (["data.root=3"], r"^data\.root: expected a string or null, got 3$"),
        (["data.hflip=maybe"], r"^data\.hflip: expected true or false, got 'maybe' \(now data\.augment: \[hflip\]\)$"),
        (["data.hflip=true", "data.augment=[vflip]"], r"^data\.hflip: replaced by data\.augment; add hflip to its"),
        (["data.kind=cityscape"],
         r"^data\.kind: unknown kind 'cityscape'; did you mean cityscapes\? \(kinds: cityscapes, acdc, kvasir, voc, folder"),
        (["data.kind=3"], r"^data\.kind: expected a string or null, got 3$"),
        (["data.val_fraction=0"], r"^data\.val_fraction: expected a number between 0 and 1, got 0\.0$"),
        (["data.val_fraction=1"], r"^data\.val_fraction: expected a number between 0 and 1, got 1\.0$"),
        (["data.val_fraction=half"], r"^data\.val_fraction: expected a number, got 'half'$"),
        (["data.classes=[]"], r"^data\.classes: expected null or a list of class names, got \[\]$"),
        (["data.augment=hflip"], r"^data\.augment: expected a list or null, got 'hflip'$"),
        (["data.augment=[3]"], r"^data\.augment\[0\]: expected a transform name or a one-key mapping"),
        (["data.augment=[hflip, {a: {}, b: {}}]"],
         r"^data\.augment\[1\]: expected a transform name or a one-key mapping such as"),
        (["data.augment=[{random_scale: 2}]"],
         r"^data\.augment\[0\]\.random_scale: expected a mapping of arguments \(min, max\), not 2$"),
        (["data.augment=[{random_flip: {}}]"],
         r"^data\.augment\[0\]: unknown transform 'random_flip'; did you mean"),
        (["data.size=64", "data.augment=[{random_crop: {size: 96, pad_if_needed: false}}]"],
         r"^data\.augment\[0\]\.random_crop: a 96x96 crop is larger than the padded image"),
        (["data.val_extra.root=/x"], r"^data\.val_extra\.kind: missing; expected a string$"),
        (["data.val_extra={kind: acdc, rooot: /x}"],
         r"^data\.val_extra\.rooot: unknown key; did you mean data\.val_extra\.root\?$"),
        (["data.val_extra={kind: acdc, size: 0}"],
         r"^data\.val_extra\.size: expected null or an integer from 1 to 4096"),
        (["data.val_extra={kind: cs}"], r"^data\.val_extra\.kind: unknown kind 'cs'"),
        (["data.val_extra=acdc"], r"^data\.val_extra: expected a mapping or null, got 'acdc'$"),
        (["data.synthetic.n_train=3"], r"^data\.synthetic\.n_val: missing; expected an integer$"),
        (["data.synthetic={n_train: 0, n_val: 1, width: 8}"],
         r"^data\.synthetic\.n_train: expected an integer >= 1, got 0$"),
        (["data.synthetic={n_train: 1, n_val: 1, width: 5000}"],
         r"^data\.synthetic\.width: expected an integer from 1 to 4096"),
    ],
)
def test_bad_data_keys_are_one_line_errors_at_load(empty, overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(empty, overrides)


@pytest.mark.parametrize(
    "conditions, message",
    [
        ("Fog",
         r"^data\.conditions: unknown condition 'Fog'; did you mean fog\? \(conditions: fog, night, rain, snow\)$"),
        ("[fog, ice]", r"^data\.conditions: unknown condition 'ice' \(conditions: fog, night, rain, snow\)$"),
        ("snw,night", r"^data\.conditions: unknown condition 'snw'; did you mean snow\?"),
        ("[]", r"^data\.conditions: expected null \(all four\) or at least one of fog, night, rain, snow, got \[\]$"),
        ("[fog, 1]", r"^data\.conditions: expected a list or a string or null, got \['fog', 1\]$"),
    ],
)
def test_unknown_conditions_are_refused_naming_the_four(empty, conditions, message):
    with pytest.raises(UserError, match=message):
        load_config(empty, ["data.kind=acdc", f"data.conditions={conditions}"])


def test_conditions_become_a_list_in_acdc_order(empty):
    as_text = load_config(empty, ["data.conditions=night,fog,"])
    as_list = load_config(empty, ["data.conditions=[night, fog]"])
    assert as_text.data.conditions == as_list.data.conditions == ["fog", "night"]
    extra = load_config(empty, ["data.val_extra={kind: acdc, conditions: snow}"]).data.val_extra
    assert extra == ValExtraConfig("acdc", conditions=["snow"])


def test_the_config_takes_the_kinds_of_the_table(empty, monkeypatch):
    from iwu.data import kinds

    monkeypatch.setattr(kinds, "KINDS", (*kinds.KINDS, "tiny"))  # a row added: the config takes its name
    assert load_config(empty, ["data.kind=tiny"]).data.kind == "tiny"
    monkeypatch.setattr(kinds, "KINDS", tuple(k for k in kinds.KINDS if k != "voc"))
    with pytest.raises(UserError, match="data.kind"):
        load_config(empty, ["data.kind=voc"])


def test_augment_steps_of_the_right_shape_load_as_written(empty):
    c = load_config(empty, ["data.augment=[hflip, {random_scale: {min: 0.5, max: 2.0}}, {random_crop: {size: 64}}]"])
    assert c.data.augment == ["hflip", {"random_scale": {"min": 0.5, "max": 2.0}}, {"random_crop": {"size": 64}}]


@pytest.mark.parametrize("hflip, augment", [(False, None), (True, ["hflip"])])
def test_saved_runs_with_hflip_still_load(tmp_path, hflip, augment):
    """Runs saved before `augment` carry `data.hflip` in config.yaml and in their checkpoints."""
    path = tmp_path / "config.yaml"
    path.write_text(f"data: {{kind: cityscapes, root: /d, size: 64, hflip: {str(hflip).lower()}}}\n")
    c = load_config(path)
    assert c.data == DataConfig(kind="cityscapes", root="/d", size=64, augment=augment)
    old = c.to_dict()
    old["data"] = {k: v for k, v in old["data"].items() if k not in ("augment", "val_fraction")} | {"hflip": hflip}
    assert config_from_dict(old) == c  # as a checkpoint holds it


def test_a_run_saved_with_hflip_false_resumes(tmp_path, empty):
    c = load_config(empty, ["data.kind=cityscapes", "data.root=/d", f"out={tmp_path}", "resume=true"])
    saved = c.to_dict()
    saved["data"] = {k: v for k, v in saved["data"].items() if k != "augment"} | {"hflip": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_run_dir(c, tmp_path)  # the same run: no error
    with pytest.raises(UserError, match=r"another config than the run's \(data\.augment\)"):
        check_run_dir(load_config(empty, ["data.kind=cityscapes", "data.root=/d", f"out={tmp_path}", "resume=true",
                                          "data.augment=[hflip]"]), tmp_path)


def test_round_trip_of_every_data_key(tmp_path, empty):
    c = load_config(empty, ["data.kind=acdc", "data.root=/a", "data.conditions=fog,rain", "data.size=64",
                            "data.val_fraction=0.1", "data.augment=[hflip, {random_scale: {min: 0.5}}, {random_crop: {size: 32}}]",
                            "data.pin_memory=false", "data.val_extra={kind: cityscapes, root: /c, size: 32}",
                            "data.synthetic={n_train: 3, n_val: 2, width: 16}", "data.classes=[a, b]"])
    assert c.data.synthetic == SyntheticConfig(3, 2, 16) and c.data.val_extra.size == 32
    assert load_config(save_config(c, tmp_path / "config.yaml")) == c
    assert config_from_dict(c.to_dict()) == c
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["conditions"] == ["fog", "rain"]


def test_a_sweep_plan_refuses_a_misspelt_data_key(tmp_path, capsys):
    args = ["sweep", str(demo_config_path()), "--seeds", "2", "--dry-run", f"out={tmp_path}"]
    assert main([*args, "data.bach_size=4"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "iwu sweep: error: data.bach_size: unknown key; did you mean data.batch_size?"
    assert "new" not in captured.out  # no run planned
    assert main([*args, "data.batch_size=4"]) == 0
