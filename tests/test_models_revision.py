"""Checkpoints saved before the MobileNetV2 member became the published network load as what they were."""

import pytest
import torch
import yaml

from iwu.config.schema import load_config, save_config
from iwu.errors import UserError
from iwu.inference.loading import load_models
from iwu.models.mobilenet import InputPaddedBlock
from iwu.models import MODELS_REVISION, build_model, names_at_revision
from iwu.engine.train import train

OLD, TV = "deeplabv3plus_mobilenet", "deeplabv3plus_mobilenet_torchvision"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-member MobileNetV2 run of two steps, validated at its end."""
    folder = tmp_path_factory.mktemp("revision")
    config = {
        "experiment": "tiny", "mode": "standard", "val_every": 2,
        "members": [{"name": OLD, "lr": 1e-3}, {"name": TV, "lr": 1e-3}],
        "model": {"pretrained": False},
        "data": {"kind": "cityscapes", "root": str(folder / "scenes"), "size": 32, "cache_dir": str(folder / "cache"),
                 "synthetic": {"n_train": 4, "n_val": 1, "width": 64}},
        "trainer": {"max_steps": 2, "accelerator": "cpu"},
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = folder / "run"
    train(load_config(folder / "tiny.yaml", [f"out={out}"]), progress=False)
    return folder / "tiny.yaml", out


def as_saved_before_revisions(path, to):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["iwu"].pop("models_revision") == MODELS_REVISION
    torch.save(checkpoint, to)
    return checkpoint


def padded_blocks(model):
    return sum(isinstance(m, InputPaddedBlock) for m in model.modules())


def test_names_at_revision():
    assert names_at_revision([OLD, "deeplabv3plus_resnet101"], 1) == [TV, "deeplabv3plus_resnet101"]
    assert names_at_revision([OLD, "deeplabv3plus_resnet101"], MODELS_REVISION) == [OLD, "deeplabv3plus_resnet101"]


def test_an_old_ensemble_checkpoint_loads_into_torchvision_padding(run, tmp_path, capsys):
    _, out = run
    new = load_models(out, "cpu").module
    assert padded_blocks(new.members[0]) == 17 and capsys.readouterr().err == ""

    saved = as_saved_before_revisions(out / "checkpoints" / "best_ensemble.ckpt", tmp_path / "old.ckpt")
    old = load_models(tmp_path / "old.ckpt", "cpu").module
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "earlier iwu" in err and f"{OLD} as {TV}" in err
    assert padded_blocks(old.members[0]) == 0
    assert padded_blocks(old.members[1]) == padded_blocks(new.members[1]) == 0
    assert old.names == new.names == [OLD, TV]  # as its run's final.json names them

    # the loaded member is the torchvision-padded network with the checkpoint's weights
    reference = build_model(TV, 19, pretrained=False)
    prefix = "members.0."
    reference.load_state_dict({k[len(prefix):]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)})
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(old.members[0](x), reference.eval()(x))
        assert not torch.allclose(new.members[0](x), old.members[0](x))
        assert torch.equal(new.members[1](x), old.members[1](x))


def test_an_old_member_checkpoint_loads_into_torchvision_padding(run, tmp_path, capsys):
    _, out = run
    as_saved_before_revisions(out / "checkpoints" / f"best_{OLD}.pt", tmp_path / "old.pt")
    old = load_models(tmp_path / "old.pt", "cpu").module
    assert f"{OLD} as {TV}" in capsys.readouterr().err
    assert padded_blocks(old) == 0 and old.names == [OLD]


def test_resuming_an_old_run_is_refused(run, tmp_path):
    config, out = run
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    resumed = load_config(config, [f"out={copy}", "resume=true"])
    save_config(resumed, copy / "config.yaml")
    as_saved_before_revisions(out / "checkpoints" / "last.ckpt", copy / "checkpoints" / "last.ckpt")
    with pytest.raises(UserError, match=rf"last.ckpt: saved by an earlier iwu, when {OLD} \(now {TV}\) was"):
        train(resumed, progress=False)
