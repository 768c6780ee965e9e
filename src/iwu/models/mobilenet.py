"""MobileNetV2 backbones for DeepLabV3+: the published network, and torchvision's padding as a variant.

The published DeepLabV3+ code (VainF/DeepLabV3Plus-Pytorch, used unchanged by
the paper) has its own MobileNetV2. Its stem conv has no padding, and every
inverted residual block zero-pads its *input*, TF-style, for its depthwise 3x3
conv at the block's dilation, before the 1x1 expansion; all its convs have
padding 0. torchvision pads inside the depthwise conv, after the expansion, so
its border holds zeros where the published one holds the expansion of a zero
pixel (ReLU6 of the BatchNorm's shift). Same parameters, different function.

Both are built here from torchvision's modules, so the two have torchvision's
state-dict keys and load its ImageNet weights, as the published code does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models._utils import IntermediateLayerGetter

Padding = Literal["published", "torchvision"]
LOW_LEVEL_CHANNELS, HIGH_LEVEL_CHANNELS = 24, 320


def _depthwise(block: nn.Module) -> nn.Conv2d:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)


def dilate(blocks: nn.Sequential, output_stride: int) -> list[int]:
    """Turn the strides of `blocks` (features[1:-1]) beyond the output stride into dilation of
    their depthwise convs, as the published code does, and return each block's dilation:
    the block that would have strided keeps the previous rate, later blocks double it."""
    stride, dilation, rates = 2, 1, []  # features[0] already halves the input
    for block in blocks:
        dw = _depthwise(block)
        dw.dilation = (dilation, dilation)
        rates.append(dilation)
        if dw.stride == (2, 2):
            if stride == output_stride:
                dw.stride = (1, 1)
                block.stride = 1  # no residual either way: these blocks change the channel count
                dilation *= 2
            else:
                stride *= 2
    return rates


class InputPaddedBlock(nn.Module):
    """A torchvision inverted residual block computing the published one: its input zero-padded
    for the depthwise 3x3 conv at `dilation`, its convs unpadded. Keeps the block's `conv`, so
    its state-dict keys are torchvision's."""

    def __init__(self, block: nn.Module, dilation: int):
        super().__init__()
        self.conv = block.conv
        self.use_res_connect = block.use_res_connect
        for m in self.conv.modules():
            if isinstance(m, nn.Conv2d):
                m.padding = (0, 0)
        # TF's "fixed padding" of a 3x3 kernel at dilation d spans 2d pixels, split evenly
        self.padding = (dilation,) * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, self.padding))
        return x + out if self.use_res_connect else out


def mobilenet_v2_backbone(output_stride: int, state: dict | None = None,
                          padding: Padding = "published") -> nn.Module:
    """features[0:4] as "low_level" (stride 4) and features[4:-1] as "out" (`output_stride`),
    torchvision's ImageNet `state` loaded when given. The 1x1 conv to 1280 channels
    (features[-1]) and the classifier are left out, as published."""
    net = tvm.mobilenet_v2(weights=None)
    if state is not None:
        net.load_state_dict(state)
    features = net.features
    rates = dilate(features[1:-1], output_stride)
    if padding == "published":
        features[0][0].padding = (0, 0)
        for i, rate in enumerate(rates, start=1):
            features[i] = InputPaddedBlock(features[i], rate)
    elif padding == "torchvision":
        for block, rate in zip(features[1:-1], rates):
            _depthwise(block).padding = (rate, rate)
    else:
        raise ValueError(f"padding must be 'published' or 'torchvision', got {padding!r}")
    body = nn.Sequential(OrderedDict(low_level=features[0:4], out=features[4:-1]))
    return IntermediateLayerGetter(body, return_layers={"low_level": "low_level", "out": "out"})
