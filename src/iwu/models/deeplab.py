"""DeepLabV3+ and DeepLabV3 of the published code on torchvision backbones.

The architecture is the one of the published DeepLabV3+ code the paper used
(VainF/DeepLabV3Plus-Pytorch), and so is the function: with the same weights,
every member gives the published network's logits (its MobileNetV2 pads
differently from torchvision's, see iwu.models.mobilenet). Parameter counts at
19 classes and output stride 16: 5,225,203 (MobileNetV2), 39,761,331
(ResNet-50) and 58,753,459 (ResNet-101).

A model returns logits (B, num_classes, H, W) at the input size and has two
parts, `.backbone` and `.classifier`, which the optimizer gives different
learning rates.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models._utils import IntermediateLayerGetter

from iwu.errors import UserError
from iwu.models.mobilenet import HIGH_LEVEL_CHANNELS, LOW_LEVEL_CHANNELS, Padding, mobilenet_v2_backbone
from iwu.models.registry import register_model
from iwu.models.weights import torchvision_state

BACKBONE_BN_MOMENTUM = 0.01  # the published training code sets this on the backbone only
# torchvision's ImageNet weights, read from the torch hub cache when pretrained
RESNET50, RESNET101 = tvm.ResNet50_Weights.IMAGENET1K_V1.url, tvm.ResNet101_Weights.IMAGENET1K_V1.url
MOBILENET_V2 = tvm.MobileNet_V2_Weights.IMAGENET1K_V1.url


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


class DeepLabHead(nn.Module):
    """DeepLabV3's head, as published: ASPP on the high-level map, a 3x3 conv, a 1x1 conv to the classes."""

    def __init__(self, high_channels: int, num_classes: int, rates: tuple[int, int, int]):
        super().__init__()
        self.classifier = nn.Sequential(ASPP(high_channels, rates), *_conv_bn_relu(256, 256, 3),
                                        nn.Conv2d(256, num_classes, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(features["out"])


class DeepLab(nn.Module):
    """`backbone` returns feature maps ("out", and "low_level" for V3+); `classifier` turns them into
    logits, upsampled to the input's size."""

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


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def _deeplab(head: str, backbone: nn.Module, high: int, low: int, num_classes: int, output_stride: int) -> nn.Module:
    set_bn_momentum(backbone, BACKBONE_BN_MOMENTUM)
    rates = _aspp_rates(output_stride)
    classifier = (DeepLabHeadV3Plus(high, low, num_classes, rates) if head == "v3plus"
                  else DeepLabHead(high, num_classes, rates))
    return DeepLab(backbone, classifier)


def _resnet(head: str, arch: str, weights_url: str, num_classes: int, output_stride: int, pretrained: bool,
            dropout: float | None) -> nn.Module:
    _aspp_rates(output_stride)
    state = torchvision_state(weights_url) if pretrained else None  # a missing file fails before any work
    dilate = [False, output_stride == 8, True]  # layer4 always, layer3 too at OS8
    net = getattr(tvm, arch)(weights=None, replace_stride_with_dilation=dilate)
    if state is not None:
        net.load_state_dict(state)
    layers = OrderedDict()  # up to layer4: avgpool and fc are left out
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        layers[name] = getattr(net, name)
        # The published dropout backbone drops out after every stage; the one after layer4 is never
        # reached, since the feature getter stops at layer4. Low-level features leave before it.
        if dropout is not None and name in ("layer1", "layer2", "layer3"):
            layers[f"dropout{name[-1]}"] = nn.Dropout(dropout)
    returned = {"layer1": "low_level", "layer4": "out"} if head == "v3plus" else {"layer4": "out"}
    backbone = IntermediateLayerGetter(nn.Sequential(layers), return_layers=returned)
    return _deeplab(head, backbone, 2048, 256, num_classes, output_stride)


def _mobilenet(head: str, num_classes: int, output_stride: int, pretrained: bool, padding: Padding) -> nn.Module:
    _aspp_rates(output_stride)
    state = torchvision_state(MOBILENET_V2) if pretrained else None
    backbone = mobilenet_v2_backbone(output_stride, state, padding)
    return _deeplab(head, backbone, HIGH_LEVEL_CHANNELS, LOW_LEVEL_CHANNELS, num_classes, output_stride)


def _check_dropout(dropout) -> float | None:
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                                or not 0 <= dropout < 1):
        raise UserError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return dropout


@register_model("deeplabv3plus_mobilenet", pretrained_urls=[MOBILENET_V2])
def deeplabv3plus_mobilenet(num_classes: int, *, output_stride: int = 16, pretrained: bool = True) -> nn.Module:
    """The published network (its MobileNetV2 pads each block's input, see iwu.models.mobilenet)."""
    return _mobilenet("v3plus", num_classes, output_stride, pretrained, "published")


@register_model("deeplabv3plus_mobilenet_torchvision", pretrained_urls=[MOBILENET_V2])
def deeplabv3plus_mobilenet_torchvision(num_classes: int, *, output_stride: int = 16,
                                        pretrained: bool = True) -> nn.Module:
    """The same parameters with torchvision's padding: not the paper's network (iwu before models revision 2)."""
    return _mobilenet("v3plus", num_classes, output_stride, pretrained, "torchvision")


@register_model("deeplabv3plus_resnet50", pretrained_urls=[RESNET50])
def deeplabv3plus_resnet50(num_classes: int, *, output_stride: int = 16, pretrained: bool = True,
                           dropout: float | None = None) -> nn.Module:
    return _resnet("v3plus", "resnet50", RESNET50, num_classes, output_stride, pretrained,
                   _check_dropout(dropout))


@register_model("deeplabv3plus_resnet101", pretrained_urls=[RESNET101])
def deeplabv3plus_resnet101(num_classes: int, *, output_stride: int = 16, pretrained: bool = True,
                            dropout: float | None = None) -> nn.Module:
    return _resnet("v3plus", "resnet101", RESNET101, num_classes, output_stride,
                   pretrained, _check_dropout(dropout))


@register_model("deeplabv3_mobilenet", pretrained_urls=[MOBILENET_V2])
def deeplabv3_mobilenet(num_classes: int, *, output_stride: int = 16, pretrained: bool = True) -> nn.Module:
    """The published DeepLabV3 (no low-level fusion) on its MobileNetV2."""
    return _mobilenet("v3", num_classes, output_stride, pretrained, "published")


@register_model("deeplabv3_resnet50", pretrained_urls=[RESNET50])
def deeplabv3_resnet50(num_classes: int, *, output_stride: int = 16, pretrained: bool = True,
                       dropout: float | None = None) -> nn.Module:
    return _resnet("v3", "resnet50", RESNET50, num_classes, output_stride, pretrained,
                   _check_dropout(dropout))


@register_model("deeplabv3_resnet101", pretrained_urls=[RESNET101])
def deeplabv3_resnet101(num_classes: int, *, output_stride: int = 16, pretrained: bool = True,
                        dropout: float | None = None) -> nn.Module:
    return _resnet("v3", "resnet101", RESNET101, num_classes, output_stride, pretrained,
                   _check_dropout(dropout))
