"""Any segmentation network as a member: smp, torchvision, the published DeepLabV3+ and a user's own,
trained together in every mode, resumed exactly, and loaded back by evaluate, predict and masks."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from iwu.cli import main
from iwu.config.schema import load_config
from iwu.engine.ensemble import AUX_WEIGHT, EnsembleModule
from iwu.errors import UserError
from iwu.engine.init_from import init_members
from iwu.inference.loading import load_models
from iwu.models import registry
from iwu.engine.train import train
from crashing import Crash, CrashAt

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
HELPERS = Path(__file__).parent / "helpers"
SMP = {"name": "smp:Unet", "lr": 1e-3, "args": {"encoder_name": "resnet18", "encoder_depth": 3,
                                                 "decoder_channels": [16, 8, 4]}}
MIXED = [SMP, {"name": "torchvision:lraspp_mobilenet_v3_large", "lr": 1e-3},
         {"name": "deeplabv3plus_mobilenet", "lr": 1e-3}, {"name": "tiny_user_net", "lr": 1e-2, "args": {"width": 4}}]
NAMES = ["smp:Unet", "torchvision:lraspp_mobilenet_v3_large", "deeplabv3plus_mobilenet", "tiny_user_net"]


@pytest.fixture(scope="module")
def user_module():
    sys.path.insert(0, str(HELPERS))
    import user_models  # noqa: F401  (registers tiny_user_net, as `--import user_models` does)

    yield "user_models"
    sys.path.remove(str(HELPERS))


@pytest.fixture(scope="module")
def base(tmp_path_factory, user_module):
    folder = tmp_path_factory.mktemp("members")
    config = {
        "experiment": "mixed", "members": MIXED, "imports": [user_module], "val_every": 2,
        "model": {"pretrained": False},
        "data": {"kind": "cityscapes", "root": str(folder / "scenes"), "size": 64, "cache_dir": str(folder / "cache"),
                 "synthetic": {"n_train": 4, "n_val": 2, "width": 96}},
        "trainer": {"max_steps": 4, "accelerator": "cpu", "log_every_n_steps": 1},
    }
    path = folder / "mixed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _config(base, out, *overrides):
    return load_config(base, [f"out={out}", *overrides])


@pytest.mark.parametrize("mode", ["standard", "class_weighted", "instance_uncertainty", "focal"])
def test_a_mixed_ensemble_trains_in_every_mode(base, tmp_path, mode):
    final = train(_config(base, tmp_path / mode, f"mode={mode}"), progress=False)
    assert list(final["results"]) == ["ensemble", *NAMES]
    assert all(0 <= r["miou"] <= 1 for r in final["results"].values())
    assert (tmp_path / mode / "checkpoints" / "best_tiny_user_net.pt").exists()


@pytest.fixture(scope="module")
def mixed_run(base, tmp_path_factory):
    """An instance_uncertainty run of the mixed ensemble, interrupted at step 3 and resumed; and the same
    run uninterrupted."""
    folder = tmp_path_factory.mktemp("mixed_runs")
    whole = train(_config(base, folder / "whole"), progress=False)
    with pytest.raises(Crash):
        train(_config(base, folder / "resumed"), callbacks=[CrashAt(3)], progress=False)
    resumed = train(_config(base, folder / "resumed", "resume=true"), progress=False)
    return folder, whole, resumed


@pytest.mark.slow
def test_a_mixed_ensemble_resumes_exactly(mixed_run):
    folder, whole, resumed = mixed_run
    assert resumed == whole
    a = torch.load(folder / "whole" / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    b = torch.load(folder / "resumed" / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_predict_and_masks_name_the_runs_own_modules_and_import_them_when_given(mixed_run, monkeypatch,
                                                                                        tmp_path, capsys):
    folder, _, _ = mixed_run
    run = folder / "whole"
    assert yaml.safe_load((run / "config.yaml").read_text())["imports"] == ["user_models"]
    # as in a fresh process: the user's module not imported, its model not registered
    monkeypatch.setattr(registry, "MODELS", {k: v for k, v in registry.MODELS.items() if k != "tiny_user_net"})
    monkeypatch.delitem(sys.modules, "user_models")
    scenes = load_config(run / "config.yaml").data.root
    assert main(["evaluate", str(run), "--data", f"cityscapes:{scenes}"]) == 2
    assert "pass --import user_models" in capsys.readouterr().err
    assert "user_models" not in sys.modules  # a file's record is information, never imported
    assert main(["evaluate", str(run), "--data", f"cityscapes:{scenes}", "--import", "user_models"]) == 0
    record = json.loads((run / "eval_cityscapes.json").read_text())
    assert list(record["results"]) == [*NAMES, "ensemble"]
    image = next(Path(scenes, "leftImg8bit", "val").rglob("*.png"))
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--import", "user_models"]) == 0
    assert main(["masks", str(run), "--data", f"cityscapes:{scenes}", "--out", str(tmp_path / "masks"),
                 "--import", "user_models"]) == 0
    assert "tiny_user_net" in registry.MODELS


def test_a_torchvision_auxiliary_head_adds_its_loss_at_0_4(base, tmp_path):
    config = _config(base, tmp_path, "mode=standard")
    config.members = [type(config.members[0])("torchvision:fcn_resnet50", 1e-3,
                                               {"aux_loss": True})]
    torch.manual_seed(0)
    module = EnsembleModule(config, [f"c{i}" for i in range(19)])
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.randint(0, 19, (2, 32, 32)),
             "name": ["a", "b"]}
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    torch.manual_seed(1)
    out = module.members[0](batch["image"])
    ce = torch.nn.functional.cross_entropy
    expected = ce(out["out"], batch["label"]) + AUX_WEIGHT * ce(out["aux"], batch["label"])
    torch.testing.assert_close(loss, expected)


class _WrongShape(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x)[:, :, ::2, ::2]


def test_bad_members_are_one_line_errors_before_training(base, tmp_path, monkeypatch):
    cases = [
        ("members.0.name=smp:Unett", "unknown architecture 'Unett' (did you mean Unet"),
        ("members.0.args.encoder_name=resnet19", "unknown encoder 'resnet19'"),
        ("members.0.args.decoder_chanels=[8]", "unknown argument 'decoder_chanels' (did you mean decoder_channels"),
        ("members.1.name=torchvision:lraspp", "unknown torchvision builder 'lraspp'"),
        ("members.1.name=keras:Unet", "unknown family 'keras'"),
        ("members.3.args.widht=4", "unknown argument 'widht' (did you mean width"),
        ("members.0.args.classes=3", "args.classes is set by iwu"),
    ]
    for override, needle in cases:
        with pytest.raises(UserError) as info:
            train(_config(base, tmp_path / "bad", override), progress=False)
        assert needle in str(info.value) and "\n" not in str(info.value), (override, str(info.value))
        assert not (tmp_path / "bad" / "checkpoints").exists()

    monkeypatch.setitem(registry.MODELS, "wrong_shape", lambda num_classes, **kw: _WrongShape())
    with pytest.raises(UserError, match=r"member wrong_shape: returned shape \(2, 2, 16, 16\) for input "
                                        r"\(2, 3, 32, 32\); a member returns logits \(2, 19, 32, 32\)"):
        train(_config(base, tmp_path / "shape", "members=[{name: wrong_shape, lr: 0.1}]", "data.size=32"),
              progress=False)


def test_missing_pretrained_weights_are_all_named_before_any_data_is_prepared(base, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    out = tmp_path / "run"
    with pytest.raises(UserError) as info:
        train(_config(base, out, "model.pretrained=true", "data.cache_dir=" + str(tmp_path / "cache")),
              progress=False)
    message = str(info.value)
    assert message.startswith("3 pretrained weights files not in the local caches") and "\n" not in message
    for source in ("smp-hub/resnet18.imagenet", "mobilenet_v3_large-8738ca79.pth", "mobilenet_v2-b0353104.pth"):
        assert source in message
    assert not (tmp_path / "cache").exists()  # no data prepared
    assert main(["weights", str(base), "model.pretrained=true"]) == 1


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/examples/*.yaml")))
def test_example_configs_build_their_members(path, user_module):
    config = load_config(path, ["model.pretrained=false"])
    module = EnsembleModule(config, [f"c{i}" for i in range(19)])
    with torch.no_grad():
        logits = module.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(z.shape) for z in logits] == [(1, 19, 64, 64)] * len(config.members)


def _module(config_path, *overrides, classes=19):
    config = load_config(config_path, list(overrides))
    torch.manual_seed(5)
    return EnsembleModule(config, [f"c{i}" for i in range(classes)])


def test_members_start_from_a_run_or_from_one_members_weights(base, mixed_run, capsys):
    folder, _, _ = mixed_run
    run = folder / "whole"
    trained = torch.load(run / "checkpoints" / "best_ensemble.ckpt", weights_only=True)["state_dict"]
    module = _module(base)
    init_members(module, run)
    assert all(torch.equal(v, trained[k]) for k, v in module.state_dict().items())

    user = run / "checkpoints" / "best_tiny_user_net.pt"
    one = torch.load(user, weights_only=True)["state_dict"]
    module = _module(base, "members=[{name: tiny_user_net, lr: 0.01, args: {width: 4}}]", classes=5)
    init_members(module, user)
    note = capsys.readouterr().err
    assert "2 tensors of other shapes (body.3.weight, body.3.bias) keep their fresh initialisation" in note
    state = module.members[0].state_dict()
    assert state["body.3.weight"].shape[0] == 5
    assert all(torch.equal(state[k], one[k]) for k in state if not k.startswith("body.3."))
    with pytest.raises(UserError, match="tensors of other shapes .*model.init_strict=true"):
        init_members(module, user, strict=True)
    with pytest.raises(UserError, match="its members .* are not this run's"):
        init_members(_module(base, "members=[{name: tiny_user_net, lr: 0.01}]"), run)
    with pytest.raises(UserError, match="holds a tiny_user_net, and no member is one"):
        init_members(_module(base, "members=[{name: deeplabv3plus_mobilenet, lr: 0.01}]"), user)


def test_a_run_can_start_from_another(base, mixed_run, tmp_path):
    folder, _, _ = mixed_run
    final = train(_config(base, tmp_path / "finetune", f"model.init_from={folder / 'whole'}", "trainer.max_steps=2"),
                  progress=False)
    assert list(final["results"]) == ["ensemble", *NAMES]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_members_and_ensemble_that_match_pytorch(mixed_run, tmp_path, fmt, capsys):
    folder, _, _ = mixed_run
    out = tmp_path / fmt
    assert main(["export", str(folder / "whole"), "--format", fmt, "--out", str(out), "--size", "64"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("max |diff| vs PyTorch") == 5  # four members and the ensemble, each checked
    loaded = load_models(folder / "whole", "cpu")
    x = torch.randn(3, 3, 64, 64)  # another batch size than the one traced
    with torch.no_grad():
        expected = torch.stack([z.softmax(1) for z in loaded.module(x)]).mean(0)
    path = out / f"ensemble{'.onnx' if fmt == 'onnx' else '.torchscript.pt'}"
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    else:
        got = torch.jit.load(str(path))(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert len(list(out.iterdir())) == 6  # five networks and export.json


def test_a_run_written_before_members_had_args_still_resumes(base, tmp_path):
    from iwu.engine.run_dir import check_run_dir

    config = _config(base, tmp_path / "old", "resume=true")
    (tmp_path / "old").mkdir()
    raw = config.to_dict()
    del raw["imports"], raw["model"]["init_from"], raw["model"]["init_strict"]
    raw["members"] = [{k: v for k, v in m.items() if k != "args" or v} for m in raw["members"]]  # as written then
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(raw))
    check_run_dir(config, tmp_path / "old")  # no "another config" for the keys added since
    with pytest.raises(UserError, match=r"another config than the run's \(seed\)"):
        check_run_dir(_config(base, tmp_path / "old", "resume=true", "seed=9"), tmp_path / "old")


def test_iwu_weights_fetch_fills_both_caches(base, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    fetched = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, filename: fetched.append((repo, filename)))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: fetched.append(url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["weights", str(base), "model.pretrained=true", "--fetch"]) == 0
    assert ("smp-hub/resnet18.imagenet", "model.safetensors") in fetched
    assert ("smp-hub/resnet18.imagenet", "config.json") in fetched
    assert "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth" in fetched
    assert "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth" in fetched
    out = capsys.readouterr().out
    assert "tiny_user_net: no pretrained files known" in out and "MISSING" in out

    def offline(url, **kw):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["weights", str(base), "model.pretrained=true", "--fetch"]) == 2
    err = capsys.readouterr().err
    assert "could not fetch it ([Errno -3] Temporary failure" in err and err.count("\n") == 1


def test_offline_masks_of_a_mixed_ensemble_train_a_mixed_ensemble(mixed_run, base, tmp_path):
    folder, _, _ = mixed_run
    scenes = load_config(folder / "whole" / "config.yaml").data.root
    masks = tmp_path / "masks"
    assert main(["masks", str(folder / "whole"), "--data", f"cityscapes:{scenes}", "--out", str(masks)]) == 0
    final = train(_config(base, tmp_path / "offline", "mode=offline_masks", f"loss.masks_dir={masks}"),
                  progress=False)
    assert final["mode"] == "offline_masks" and list(final["results"]) == ["ensemble", *NAMES]
