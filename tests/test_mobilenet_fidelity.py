"""The MobileNetV2 member computes the published network (fixtures/published_mobilenet/README.md)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from iwu.models.mobilenet import InputPaddedBlock
from iwu.models import build_model
from published_layout import FIXTURES, fill_with_the_fixture_weights, published_key

PUBLISHED, TORCHVISION = "deeplabv3plus_mobilenet", "deeplabv3plus_mobilenet_torchvision"
TOLERANCE = 1e-6  # the published network itself is 1.2e-7 from the eval outputs


@pytest.fixture(scope="module")
def outputs():
    with np.load(FIXTURES / "outputs.npz") as eval_outputs, np.load(FIXTURES / "train_without_dropout.npz") as train:
        return {**{k: eval_outputs[k] for k in ("input", "os16_eval", "os8_eval")}, **dict(train)}


def member(name: str, output_stride: int, train: bool) -> nn.Module:
    model = fill_with_the_fixture_weights(build_model(name, 19, output_stride=output_stride, pretrained=False).double())
    model.train(train)
    for m in model.modules():
        if isinstance(m, nn.Dropout):  # the train fixture has the head's dropout off
            m.eval()
    return model


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_logits_equal_the_published_network(outputs, output_stride, mode):
    x = torch.from_numpy(outputs["input"])
    assert x.shape[-2:] == (33, 49)  # odd and non-square: every padding shows
    with torch.no_grad():
        logits = member(PUBLISHED, output_stride, mode == "train")(x).numpy()
    np.testing.assert_allclose(logits, outputs[f"os{output_stride}_{mode}"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_torchvision_padding_is_another_function(outputs, output_stride):
    x = torch.from_numpy(outputs["input"])
    with torch.no_grad():
        logits = member(TORCHVISION, output_stride, False)(x).numpy()
    assert np.abs(logits - outputs[f"os{output_stride}_eval"]).max() > 100 * TOLERANCE


@pytest.mark.parametrize("output_stride", [16, 8])
def test_state_dict_keys_and_shapes_are_the_published_ones_renamed(output_stride):
    expected = json.loads((FIXTURES / "keys.json").read_text())[f"os{output_stride}"]
    for name in (PUBLISHED, TORCHVISION):  # the same names: checkpoints move between the two
        state = build_model(name, 19, output_stride=output_stride, pretrained=False).state_dict()
        shapes = {published_key(k): list(v.shape) for k, v in state.items()}
        assert [k for k in shapes if not k.endswith("num_batches_tracked")] == expected["keys"]
        assert shapes == expected["shapes"]


@pytest.mark.parametrize("output_stride, rates", [(16, [1] * 14 + [2] * 3), (8, [1] * 7 + [2] * 7 + [4] * 3)])
def test_blocks_pad_their_input_at_their_dilation_and_no_conv_pads(output_stride, rates):
    backbone = build_model(PUBLISHED, 19, output_stride=output_stride, pretrained=False).backbone
    blocks = [*backbone.low_level[1:], *backbone.out]
    assert all(isinstance(b, InputPaddedBlock) for b in blocks)
    assert [b.padding for b in blocks] == [(r,) * 4 for r in rates]
    assert all(m.padding == (0, 0) for m in backbone.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name, mode", [("deeplabv3_mobilenet", "eval"), ("deeplabv3_mobilenet", "train"),
                                        ("deeplabv3_resnet50", "eval")])
def test_deeplabv3_members_equal_the_published_deeplabv3(outputs, name, mode):
    with np.load(FIXTURES.parent / "published_deeplabv3" / "outputs.npz") as published:
        expected = published[f"{name}_{mode}"]
    with torch.no_grad():
        logits = member(name, 16, mode == "train")(torch.from_numpy(outputs["input"])).numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=TOLERANCE)
