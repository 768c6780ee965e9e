"""Members built by the libraries that already build them: segmentation_models_pytorch (and timm
through it) as `smp:<Arch>`, torchvision's segmentation builders as `torchvision:<builder>` (or `tv:`).

`FAMILY_TABLE` is the one list of these families: building a member, finding the files it reads and
every message that names the families read it, so a new family is one entry there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from iwu.errors import UserError
from iwu.models.member_args import check_args, named_keywords, near, refusal
from iwu.models.weights import WeightsFile, hf_file, hub_file, offline, require


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError:  # a dependency; a broken environment still gets one line
        raise UserError("smp: members need segmentation_models_pytorch (pip install segmentation-models-pytorch)")
    return smp


def smp_weights(encoder: str) -> list[WeightsFile]:
    """The files an smp encoder's ImageNet weights come from (Hugging Face repositories)."""
    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is None or not cfg.hf_hub_id:
            return [hub_file(cfg.url)] if cfg is not None and cfg.url else []
        return [hf_file(cfg.hf_hub_id, "model.safetensors")]
    settings = _smp().encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    return [hf_file(settings["repo_id"], "model.safetensors")] if settings else []


def _check_encoder(member: str, encoder: str) -> None:
    smp = _smp()
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise UserError(f"member {member}: unknown timm encoder {encoder!r}"
                            f"{near(encoder[3:], timm.list_models())}")
    elif encoder not in smp.encoders.encoders:
        raise UserError(f"member {member}: unknown encoder {encoder!r}{near(encoder, smp.encoders.encoders)}; "
                        "or any timm model as tu-<name>")


def _smp_class(member: str, arch: str):
    classes = {cls.__name__: cls for cls in _smp().MODEL_ARCHITECTURES_MAPPING.values()}
    if arch not in classes:
        raise UserError(f"member {member}: unknown architecture {arch!r}{near(arch, classes)}; smp has: "
                        f"{', '.join(sorted(classes))}")
    return classes[arch]


def smp_encoder(member: str, arch: str, args: dict) -> str:
    """The encoder an smp member builds: its args' `encoder_name`, or the architecture's default."""
    return args.get("encoder_name", inspect.signature(_smp_class(member, arch)).parameters["encoder_name"].default)


def build_smp(member: str, arch: str, num_classes: int, *, pretrained: bool, args: dict) -> nn.Module:
    cls = _smp_class(member, arch)
    encoder = smp_encoder(member, arch, args)
    _check_encoder(member, encoder)
    timm_encoder = encoder.startswith("tu-")
    # **kwargs of an smp model go to a timm encoder, which takes its own keywords
    check_args(member, args, None if timm_encoder else named_keywords(cls))
    weights = (True if timm_encoder else "imagenet") if pretrained else None
    needed = smp_weights(encoder) if pretrained else []
    require(member, needed)
    try:
        with offline(member):
            return cls(classes=num_classes, encoder_weights=weights, **args)
    except (KeyError, ValueError, TypeError, AssertionError, RuntimeError) as err:
        raise UserError(f"member {member}: {refusal(err)}") from None


def _torchvision_builders() -> dict:
    from torchvision import models

    return {name: models.get_model_builder(name) for name in models.list_models(module=models.segmentation)}


def torchvision_weights(arch: str) -> list[WeightsFile]:
    """The ImageNet backbone file a torchvision segmentation builder loads by default."""
    default = inspect.signature(_torchvision_builders()[arch]).parameters["weights_backbone"].default
    return [hub_file(default.url)] if default is not None else []


def build_torchvision(member: str, arch: str, num_classes: int, *, pretrained: bool, args: dict) -> nn.Module:
    builders = _torchvision_builders()
    if arch not in builders:
        raise UserError(f"member {member}: unknown torchvision builder {arch!r}{near(arch, builders)}; "
                        f"torchvision has: {', '.join(sorted(builders))}")
    builder = builders[arch]
    # its **kwargs are documented as unused, so a misspelt option would vanish: only named ones pass
    check_args(member, args, [n for n in named_keywords(builder) if n != "progress"])
    backbone = inspect.signature(builder).parameters["weights_backbone"].default if pretrained else None
    needed = torchvision_weights(arch) if pretrained else []
    require(member, needed)
    try:
        with offline(member):
            return builder(weights=None, weights_backbone=backbone, num_classes=num_classes, **args)
    except (ValueError, TypeError) as err:
        raise UserError(f"member {member}: {refusal(err)}") from None


@dataclass(frozen=True)
class Family:
    """A library whose networks members name as `<name>:<arch>` (or `<alias>:<arch>`)."""

    name: str
    arch: str  # what follows the colon, as messages spell it: `smp:<Arch>`
    build: Callable[..., nn.Module]  # (member, arch, num_classes, *, pretrained, args) -> the network
    weights: Callable[[str, str, dict], list[WeightsFile]]  # (member, arch, args) -> the pretrained files it reads
    aliases: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        return f"{self.name}:<{self.arch}>"


def _smp_member_weights(member: str, arch: str, args: dict) -> list[WeightsFile]:
    return smp_weights(smp_encoder(member, arch, args))


def _torchvision_member_weights(member: str, arch: str, args: dict) -> list[WeightsFile]:
    return torchvision_weights(arch)


FAMILY_TABLE = (
    Family("smp", "Arch", build_smp, _smp_member_weights),
    Family("torchvision", "builder", build_torchvision, _torchvision_member_weights, aliases=("tv",)),
)
_BY_PREFIX = {prefix: family for family in FAMILY_TABLE for prefix in (family.name, *family.aliases)}
FAMILIES = tuple(_BY_PREFIX)  # every prefix a member's name may start with, aliases included
USAGES = ", ".join(family.usage for family in FAMILY_TABLE)  # "smp:<Arch>, torchvision:<builder>"


def family_of(member: str, prefix: str) -> Family:
    """The family `prefix` (the part of `member`'s name before the colon) names; a UserError if none."""
    if prefix not in _BY_PREFIX:
        raise UserError(f"member {member}: unknown family {prefix!r}{near(prefix, FAMILIES)}; "
                        f"families: {', '.join(FAMILIES)}")
    return _BY_PREFIX[prefix]
