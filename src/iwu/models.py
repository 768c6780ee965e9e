"""DeepLabV3+ ensemble members on torchvision backbones, and a registry of them.

The architecture is the one of the published DeepLabV3+ code the paper used
(VainF/DeepLabV3Plus-Pytorch), and so is the function: with the same weights,
every member gives the published network's logits (its MobileNetV2 pads
differently from torchvision's, see iwu.mobilenet). Parameter counts at 19
classes and output stride 16: 5,225,203 (MobileNetV2), 39,761,331 (ResNet-50)
and 58,753,459 (ResNet-101).

A model returns logits (B, num_classes, H, W) at the input size and has two
parts, `.backbone` and `.classifier`, which the optimizer gives different
learning rates. Configs name members by string through `MODELS`; users add
their own with `@register_model("name")`.
"""

import importlib
import os
from collections.abc import Callable
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models._utils import IntermediateLayerGetter

from .errors import UserError
from .mobilenet import HIGH_LEVEL_CHANNELS, LOW_LEVEL_CHANNELS, Padding, mobilenet_v2_backbone

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}

BACKBONE_BN_MOMENTUM = 0.01  # the published training code sets this on the backbone only

# Saved in every checkpoint, so weights meet the network they were trained as. Revision 2:
# `deeplabv3plus_mobilenet` became the published network; before, it had torchvision's padding,
# the network now registered as `deeplabv3plus_mobilenet_torchvision`.
MODELS_REVISION = 2
_RENAMED_AFTER = {1: {"deeplabv3plus_mobilenet": "deeplabv3plus_mobilenet_torchvision"}}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(num_classes, *, output_stride, pretrained) -> nn.Module` under `name`."""

    def decorator(builder: Builder) -> Builder:
        if name in MODELS:
            # A programming mistake (two plug-ins, one name), so it keeps its traceback.
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return decorator


def build_model(name: str, num_classes: int, *, output_stride: int = 16, pretrained: bool = True) -> nn.Module:
    """Build the registered model `name` (see `MODELS`)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    _aspp_rates(output_stride)  # here too, as a user's builder may not check
    return MODELS[name](num_classes, output_stride=output_stride, pretrained=pretrained)


def names_at_revision(names: list[str], revision: int) -> list[str]:
    """Today's names of the networks that `names` built at models `revision` (1: checkpoints
    written before revisions were recorded)."""
    for r in range(revision, MODELS_REVISION):
        names = [_RENAMED_AFTER[r].get(name, name) for name in names]
    return names


def import_user_modules(modules) -> None:
    """Import modules named by `--import`, so the models they register are known by name."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"--import {module}: {err}") from None


# --- head -------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, padding=padding, dilation=dilation, bias=False),  # BN follows
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Sequential):
    """Image-level features: global average, 1x1 conv, broadcast back to the map's size."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling. Same shape as torchvision's `ASPP`, but the
    published head drops out 0.1 after the projection, not torchvision's 0.5."""

    def __init__(self, cin: int, rates: tuple[int, int, int], cout: int = 256, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(
            [_conv_bn_relu(cin, cout)]
            + [_conv_bn_relu(cin, cout, 3, rate) for rate in rates]
            + [ASPPPooling(cin, cout)]
        )
        self.project = nn.Sequential(*_conv_bn_relu(len(self.convs) * cout, cout), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHeadV3Plus(nn.Module):
    """ASPP on the high-level map, fused with projected low-level features at their resolution."""

    def __init__(self, high_channels: int, low_channels: int, num_classes: int, rates: tuple[int, int, int]):
        super().__init__()
        self.project = _conv_bn_relu(low_channels, 48)  # few channels, so ASPP's 256 dominate the fusion
        self.aspp = ASPP(high_channels, rates)
        self.classifier = nn.Sequential(*_conv_bn_relu(48 + 256, 256, 3), nn.Conv2d(256, num_classes, 1))
        for m in self.modules():  # as the published code; torchvision's default init differs
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low_level"])
        high = self.aspp(features["out"])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, high], dim=1))


class DeepLabV3Plus(nn.Module):
    """`backbone` returns {"low_level", "out"} feature maps; `classifier` turns them into logits."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --- backbones --------------------------------------------------------------------


def _aspp_rates(output_stride: int) -> tuple[int, int, int]:
    # Halving the output stride doubles the feature map, so the rates double to see as far.
    if output_stride not in (8, 16):
        raise UserError(f"output_stride must be 8 or 16, got {output_stride!r}")
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


def _imagenet_state(weights: tvm.WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights from the torch hub cache, never from the network."""
    filename = os.path.basename(urlparse(weights.url).path)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(path):
        raise UserError(
            f"ImageNet weights {filename} not found: put the file at {path} "
            f"(download it from {weights.url} on a machine with internet), "
            "or set pretrained: false to train the backbone from scratch"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated download, not a checkpoint, or not weights at all
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"{path}: unreadable ImageNet weights ({reason}); delete the file and fetch it "
                        f"again from {weights.url}, or set pretrained: false") from None


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def _deeplabv3plus(backbone: nn.Module, high: int, low: int, num_classes: int, rates: tuple[int, ...]) -> nn.Module:
    set_bn_momentum(backbone, BACKBONE_BN_MOMENTUM)
    return DeepLabV3Plus(backbone, DeepLabHeadV3Plus(high, low, num_classes, rates))


def _resnet(arch: str, weights: tvm.WeightsEnum, num_classes: int, output_stride: int, pretrained: bool) -> nn.Module:
    rates = _aspp_rates(output_stride)
    state = _imagenet_state(weights) if pretrained else None  # a missing file fails before any work
    dilate = [False, output_stride == 8, True]  # layer4 always, layer3 too at OS8
    net = getattr(tvm, arch)(weights=None, replace_stride_with_dilation=dilate)
    if state is not None:
        net.load_state_dict(state)
    # Stops after layer4, so avgpool and fc are left out.
    backbone = IntermediateLayerGetter(net, return_layers={"layer1": "low_level", "layer4": "out"})
    return _deeplabv3plus(backbone, 2048, 256, num_classes, rates)


def _mobilenet(num_classes: int, output_stride: int, pretrained: bool, padding: Padding) -> nn.Module:
    rates = _aspp_rates(output_stride)
    state = _imagenet_state(tvm.MobileNet_V2_Weights.IMAGENET1K_V1) if pretrained else None
    backbone = mobilenet_v2_backbone(output_stride, state, padding)
    return _deeplabv3plus(backbone, HIGH_LEVEL_CHANNELS, LOW_LEVEL_CHANNELS, num_classes, rates)


@register_model("deeplabv3plus_mobilenet")
def deeplabv3plus_mobilenet(num_classes: int, *, output_stride: int = 16, pretrained: bool = True) -> nn.Module:
    """The published network (its MobileNetV2 pads each block's input, see iwu.mobilenet)."""
    return _mobilenet(num_classes, output_stride, pretrained, "published")


@register_model("deeplabv3plus_mobilenet_torchvision")
def deeplabv3plus_mobilenet_torchvision(num_classes: int, *, output_stride: int = 16,
                                        pretrained: bool = True) -> nn.Module:
    """The same parameters with torchvision's padding: not the paper's network (iwu before models revision 2)."""
    return _mobilenet(num_classes, output_stride, pretrained, "torchvision")


@register_model("deeplabv3plus_resnet50")
def deeplabv3plus_resnet50(num_classes: int, *, output_stride: int = 16, pretrained: bool = True) -> nn.Module:
    return _resnet("resnet50", tvm.ResNet50_Weights.IMAGENET1K_V1, num_classes, output_stride, pretrained)


@register_model("deeplabv3plus_resnet101")
def deeplabv3plus_resnet101(num_classes: int, *, output_stride: int = 16, pretrained: bool = True) -> nn.Module:
    return _resnet("resnet101", tvm.ResNet101_Weights.IMAGENET1K_V1, num_classes, output_stride, pretrained)
