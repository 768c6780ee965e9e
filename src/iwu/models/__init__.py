"""Ensemble members: the published DeepLabV3+/V3 networks, the libraries' segmentation models, yours.

    build_model("deeplabv3plus_resnet101", 19)                       # the paper's
    build_model("smp:Unet", 19, args={"encoder_name": "resnet34"})   # segmentation_models_pytorch
    build_model("torchvision:lraspp_mobilenet_v3_large", 19)         # torchvision

`register_model("name")` adds your own builder. `iwu.models.parts` says how a
member's parameters split into learning-rate groups and how its output becomes
logits.
"""

from iwu.models.deeplab import (  # importing it registers the published networks
    BACKBONE_BN_MOMENTUM, deeplabv3_mobilenet, deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3plus_mobilenet,
    deeplabv3plus_mobilenet_torchvision, deeplabv3plus_resnet50, deeplabv3plus_resnet101, set_bn_momentum,
)
from iwu.models.registry import (
    FAMILIES, MODELS, MODELS_REVISION, build_model, import_user_modules, names_at_revision, register_model,
)

__all__ = [
    "BACKBONE_BN_MOMENTUM", "FAMILIES", "MODELS", "MODELS_REVISION", "build_model", "deeplabv3_mobilenet",
    "deeplabv3_resnet101", "deeplabv3_resnet50", "deeplabv3plus_mobilenet", "deeplabv3plus_mobilenet_torchvision",
    "deeplabv3plus_resnet101", "deeplabv3plus_resnet50", "import_user_modules", "names_at_revision",
    "register_model", "set_bn_momentum",
]
