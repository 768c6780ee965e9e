"""DeepLabV3+ members: the published architecture, its parts, the registry, offline weights."""

import os

import sys

import pytest
import torch
import torchvision
from torch import nn

from iwu import models
from iwu.errors import UserError
from iwu.models import build_model, registry

MOBILENET, RESNET50, RESNET101 = "deeplabv3plus_mobilenet", "deeplabv3plus_resnet50", "deeplabv3plus_resnet101"
MOBILENET_TORCHVISION = "deeplabv3plus_mobilenet_torchvision"


@pytest.fixture(scope="module")
def built():
    """Each model used below, built once for the whole file."""
    cache = {}

    def get(name, output_stride=16):
        if (name, output_stride) not in cache:
            torch.manual_seed(0)
            cache[name, output_stride] = build_model(name, 19, output_stride=output_stride, pretrained=False)
        return cache[name, output_stride]

    return get


def aspp(model):
    return model.classifier.aspp


@pytest.mark.parametrize(
    "name, count",
    [(MOBILENET, 5_225_203), (MOBILENET_TORCHVISION, 5_225_203), (RESNET50, 39_761_331), (RESNET101, 58_753_459),
     ("deeplabv3_mobilenet", 5_113_363), ("deeplabv3_resnet50", 39_638_355), ("deeplabv3_resnet101", 58_630_483)],
)
def test_parameter_counts_match_the_published_models(built, name, count):
    assert sum(p.numel() for p in built(name).parameters()) == count


@pytest.mark.parametrize(
    "name, output_stride, shape, train",
    [
        (MOBILENET, 16, (1, 3, 64, 64), False),
        (MOBILENET, 8, (2, 3, 65, 65), True),
        (MOBILENET_TORCHVISION, 16, (2, 3, 65, 65), True),
        (RESNET50, 16, (2, 3, 65, 65), True),
        (RESNET50, 8, (1, 3, 64, 64), False),
        (RESNET101, 16, (1, 3, 64, 64), False),
    ],
)
def test_logits_at_input_size_and_features_at_output_stride(built, name, output_stride, shape, train):
    model = built(name, output_stride).train(train)
    x = torch.randn(shape)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (shape[0], 19, *shape[2:])
        assert torch.isfinite(logits).all()
        features = model.eval().backbone(torch.randn(1, 3, 64, 64))
    assert features["out"].shape[-2:] == (64 // output_stride,) * 2
    assert features["low_level"].shape[-2:] == (16, 16)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_resnet_dilates_layer4_at_os16_and_layer3_too_at_os8(built, output_stride):
    net = built(RESNET50, output_stride).backbone
    layer3_dilated = output_stride == 8
    assert net.layer2[0].conv2.stride == (2, 2)
    assert net.layer3[0].conv2.stride == ((1, 1) if layer3_dilated else (2, 2))
    assert net.layer3[-1].conv2.dilation == ((2, 2) if layer3_dilated else (1, 1))
    assert net.layer4[0].conv2.stride == (1, 1)
    assert net.layer4[-1].conv2.dilation == ((4, 4) if layer3_dilated else (2, 2))


@pytest.mark.parametrize("name", [MOBILENET, MOBILENET_TORCHVISION])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_mobilenet_turns_strides_beyond_the_output_stride_into_dilation(built, name, output_stride):
    blocks = built(name, output_stride).backbone.out  # features[4:-1]
    depthwise = [next(m for m in b.modules() if isinstance(m, nn.Conv2d) and m.groups > 1) for b in blocks]
    got = [(conv.stride[0], conv.dilation[0]) for conv in depthwise]
    # the published network pads each block's input instead (test_mobilenet_fidelity)
    assert all(conv.padding == (conv.dilation if name == MOBILENET_TORCHVISION else (0, 0)) for conv in depthwise)
    # (stride, dilation) of features[4..17], as in the published MobileNetV2 with output_stride.
    if output_stride == 16:
        assert got == [(2, 1)] + [(1, 1)] * 2 + [(2, 1)] + [(1, 1)] * 6 + [(1, 1)] + [(1, 2)] * 3
    else:
        assert got == [(2, 1)] + [(1, 1)] * 2 + [(1, 1)] + [(1, 2)] * 6 + [(1, 2)] + [(1, 4)] * 3


@pytest.mark.parametrize("name", [MOBILENET, RESNET101])
def test_backbone_and_classifier_partition_the_parameters(built, name):
    model = built(name)
    ids = lambda module: {id(p) for p in module.parameters()}  # noqa: E731
    backbone, classifier = ids(model.backbone), ids(model.classifier)
    assert not backbone & classifier
    assert backbone | classifier == ids(model)
    assert len(backbone) + len(classifier) == len(list(model.parameters()))
    for module in ("fc", "avgpool", "classifier"):
        assert not hasattr(model.backbone, module)


@pytest.mark.parametrize("name", [MOBILENET, RESNET50])
def test_backbone_batchnorm_momentum_is_0_01(built, name):
    norms = [m for m in built(name).backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.01 for m in norms)


@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_aspp_rates_and_dropout(built, output_stride, rates):
    head = aspp(built(MOBILENET, output_stride))
    atrous = [branch[0] for branch in head.convs if isinstance(branch[0], nn.Conv2d) and branch[0].kernel_size == (3, 3)]
    assert tuple(conv.dilation[0] for conv in atrous) == rates
    assert all(conv.padding == conv.dilation for conv in atrous)
    assert len(head.convs) == 5
    dropouts = [m for m in head.modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in dropouts] == [0.1]


def test_unknown_name_lists_the_known_ones_sorted():
    with pytest.raises(UserError) as info:
        build_model("deeplabv3plus_vgg", 19, pretrained=False)
    assert ", ".join(sorted(models.MODELS)) in str(info.value)
    assert "deeplabv3plus_vgg" in str(info.value)


@pytest.mark.parametrize("kwargs, option", [({"output_stride": 32}, "output_stride"), ({"num_classes": 0}, "num_classes")])
def test_bad_options_are_user_errors_naming_the_option(kwargs, option):
    args = {"num_classes": 19, "output_stride": 16, "pretrained": False} | kwargs
    with pytest.raises(UserError, match=option):
        build_model(MOBILENET, args.pop("num_classes"), **args)


def test_user_registered_builder_is_buildable_by_name_and_names_are_unique(monkeypatch):
    monkeypatch.setattr(models.registry, "MODELS", dict(models.MODELS))  # leave the real registry as it was

    @models.register_model("tiny")
    def tiny(num_classes, *, output_stride, pretrained):
        return nn.Conv2d(3, num_classes, 1)

    model = build_model("tiny", 5, output_stride=8, pretrained=False)
    assert isinstance(model, nn.Conv2d) and model.out_channels == 5
    with pytest.raises(ValueError, match="tiny"):
        models.register_model("tiny")(tiny)
    with pytest.raises(ValueError):
        models.register_model(MOBILENET)(tiny)


def test_the_family_table_alone_builds_finds_weights_and_names_the_families(monkeypatch):
    from iwu.models import families, prefetch

    assert models.FAMILIES == ("smp", "torchvision", "tv")
    torchvision_family = families.family_of("tv:fcn_resnet50", "tv")
    assert torchvision_family is families.family_of("torchvision:fcn_resnet50", "torchvision")
    assert torchvision_family.usage == "torchvision:<builder>"
    calls = []

    def build(member, arch, num_classes, *, pretrained, args):
        calls.append(("build", member, arch, num_classes, pretrained, args))
        return nn.Identity()

    def weights(member, arch, args):
        calls.append(("weights", member, arch, args))
        return []

    # build_model and member_weights find a family only through the table
    monkeypatch.setitem(families._BY_PREFIX, "tv", families.Family("tv", "builder", build, weights))
    assert isinstance(build_model("tv:anything", 3, pretrained=False, args={"k": 1}), nn.Identity)
    assert prefetch.member_weights("tv:anything", {"k": 1}) == []
    assert calls == [("build", "tv:anything", "anything", 3, False, {"k": 1}), ("weights", "tv:anything", "anything", {"k": 1})]

    with pytest.raises(UserError) as info:
        build_model("keras:Unet", 3, pretrained=False)
    assert str(info.value) == "member keras:Unet: unknown family 'keras'; families: smp, torchvision, tv"
    with pytest.raises(UserError) as info:
        build_model("smpp:Unet", 3, pretrained=False)
    assert str(info.value) == "member smpp:Unet: unknown family 'smpp' (did you mean smp?); families: smp, torchvision, tv"
    assert prefetch.member_weights("keras:Unet", {}) == []
    with pytest.raises(UserError, match=r"; or a library's: smp:<Arch>, torchvision:<builder>$"):
        build_model("no_such_net", 3, pretrained=False)
    with pytest.raises(ValueError, match=r"^model 'my:net': ':' is kept for the library families \(smp, torchvision, tv\)$"):
        models.register_model("my:net")(lambda num_classes: nn.Identity())


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub under tmp_path, and no way to reach the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch.hub.get_dir() == os.path.join(str(tmp_path), "hub")  # no hub dir was set explicitly

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize(
    "name, filename",
    [
        (MOBILENET, "mobilenet_v2-b0353104.pth"),
        (RESNET50, "resnet50-0676ba61.pth"),
        (RESNET101, "resnet101-63fe2227.pth"),
    ],
)
def test_missing_weights_are_a_one_line_user_error(offline_hub, name, filename):
    with pytest.raises(UserError) as info:
        build_model(name, 19, pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert filename in message
    assert str(offline_hub / filename) in message
    assert "https://download.pytorch.org/models/" + filename in message
    assert "pretrained: false" in message


@pytest.mark.parametrize("name", [MOBILENET, MOBILENET_TORCHVISION])
def test_weights_in_the_cache_are_loaded_into_the_backbone(offline_hub, name):
    saved = torchvision.models.mobilenet_v2(weights=None).state_dict()
    offline_hub.mkdir(parents=True)
    torch.save(saved, offline_hub / "mobilenet_v2-b0353104.pth")

    backbone = build_model(name, 19, pretrained=True).backbone.state_dict()
    # The backbone is features[0:4] as "low_level" and features[4:-1] as "out", indices kept.
    renamed = {"features." + key.split(".", 1)[1]: value for key, value in backbone.items()}
    expected = {k: v for k, v in saved.items() if k.startswith("features.") and not k.startswith("features.18.")}
    assert renamed.keys() == expected.keys()
    assert all(torch.equal(renamed[k], expected[k]) for k in expected)


def test_a_corrupt_weights_file_is_a_one_line_user_error(offline_hub):
    offline_hub.mkdir(parents=True)
    (offline_hub / "mobilenet_v2-b0353104.pth").write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(UserError) as info:
        build_model(MOBILENET, 19, pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "unreadable ImageNet weights" in message
    assert "mobilenet_v2-b0353104.pth" in message and "pretrained: false" in message


@pytest.mark.parametrize("name", [RESNET50, "deeplabv3_resnet101"])
def test_resnet_dropout_follows_layers_1_to_3_as_published_and_is_off_in_eval(name):
    torch.manual_seed(0)
    model = build_model(name, 19, pretrained=False, args={"dropout": 0.3})
    body = list(model.backbone.keys())
    assert body == ["conv1", "bn1", "relu", "maxpool", "layer1", "dropout1", "layer2", "dropout2", "layer3",
                    "dropout3", "layer4"]
    assert [m.p for m in model.backbone.modules() if isinstance(m, nn.Dropout)] == [0.3] * 3
    plain = build_model(name, 19, pretrained=False)
    assert list(plain.state_dict()) == list(model.state_dict())  # same weights, same names
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 48, 48)  # two images: train-mode BatchNorm of the pooled branch needs them
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))  # dropout is off in evaluation mode
        model.train()
        assert not torch.equal(model(x), model(x))  # and on in training mode (Monte Carlo dropout)


def test_dropout_must_be_a_probability():
    with pytest.raises(UserError, match="dropout must be a number in"):
        build_model(RESNET50, 19, pretrained=False, args={"dropout": 1.5})


@pytest.mark.parametrize("source, words", [
    ("raise RuntimeError('boom')\n", "importing it raised RuntimeError: boom"),
    ("def broken(:\n", "importing it raised SyntaxError"),
    ("import sys\nsys.exit(0)\n", "the module called sys.exit(0) when imported"),
    ("from iwu.models import register_model\nregister_model('deeplabv3plus_mobilenet')(lambda n: None)\n",
     "importing it raised ValueError: model 'deeplabv3plus_mobilenet' is already registered"),
])
def test_a_users_module_that_fails_is_one_line_naming_it(tmp_path, monkeypatch, capsys, source, words):
    from iwu.cli import main

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "failing_user_module.py").write_text(source)
    monkeypatch.delitem(sys.modules, "failing_user_module", raising=False)
    for argv in (["config", "--show", "demo"], ["weights", "demo"], ["export", str(tmp_path)],
                 ["evaluate", str(tmp_path), "--data", f"cityscapes:{tmp_path}"]):
        monkeypatch.delitem(sys.modules, "failing_user_module", raising=False)
        assert main([*argv, "--import", "failing_user_module"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--import failing_user_module: {words}" in err, (argv, err)


@pytest.mark.parametrize("name", ["..x", ".x", ""])
def test_relative_and_empty_module_names_are_one_line(name, capsys):
    from iwu.cli import main

    assert main(["config", "--show", "demo", "--import", name]) == 2
    assert "expected a module's full name" in capsys.readouterr().err


def test_a_builder_that_returns_no_network_is_one_line(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "returns_none", lambda num_classes, pretrained=False: None)
    with pytest.raises(UserError, match="member returns_none: its builder returned NoneType, not a torch.nn.Module"):
        build_model("returns_none", 3, pretrained=False)


def test_weights_of_a_config_without_pretrained_weights_says_so_and_succeeds(capsys):
    from iwu.cli import main

    assert main(["weights", "demo"]) == 0  # the demo trains from scratch
    out = capsys.readouterr().out
    assert "model.pretrained is false: a run of this config reads none of these files" in out


@pytest.mark.parametrize("member, words", [
    ({"name": "smp:Nope", "lr": 1e-3}, "unknown architecture 'Nope'"),
    ({"name": "smp:Unet", "lr": 1e-3, "args": {"encoder_name": "nope"}}, "unknown encoder 'nope'"),
    ({"name": "torchvision:__import__", "lr": 1e-3}, "unknown torchvision builder '__import__'"),
])
def test_weights_refuses_a_member_train_refuses(tmp_path, capsys, member, words):
    import yaml

    from iwu.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"members": [member], "model": {"pretrained": True}}))
    assert main(["weights", str(config)]) == 2
    assert words in capsys.readouterr().err
