"""How a config's member becomes a network: registered names, library families, keyword arguments.

A member is named in one of three ways:
- a registered name (`deeplabv3plus_resnet101`, or a user's `@register_model("my_unet")`);
- `smp:<Arch>`: a segmentation_models_pytorch architecture (`smp:Unet`, `smp:Segformer`;
  any timm encoder through `encoder_name: tu-<name>`);
- `torchvision:<builder>` (or `tv:`): torchvision's segmentation builders (`fcn_*`,
  `deeplabv3_*`, `lraspp_*`).
Its `args` are keyword arguments of the builder. The class count and the
pretrained setting come from iwu, and so does `output_stride` for builders that
take one.

Registered names live here; the families are the table in iwu.models.families
and the checks of `args` are in iwu.models.member_args, which both use (neither
imports this module, so the imports run one way).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from torch import nn

from iwu.errors import UserError
from iwu.models.member_args import check_args, named_keywords, near, refusal
from iwu.models.families import FAMILIES, USAGES, family_of

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}
PRETRAINED_URLS: dict[str, tuple[str, ...]] = {}  # name -> the torch hub files its builder reads when pretrained

# Saved in every checkpoint, so weights meet the network they were trained as. Revision 2:
# `deeplabv3plus_mobilenet` became the published network; before, it had torchvision's padding,
# the network now registered as `deeplabv3plus_mobilenet_torchvision`.
MODELS_REVISION = 2
_RENAMED_AFTER = {1: {"deeplabv3plus_mobilenet": "deeplabv3plus_mobilenet_torchvision"}}


def register_model(name: str, *, pretrained_urls=()) -> Callable[[Builder], Builder]:
    """Register `builder(num_classes, *, pretrained, [output_stride], **args) -> nn.Module` under `name`;
    `pretrained_urls` are the torch hub files it reads when pretrained (checked before a run starts)."""

    def decorator(builder: Builder) -> Builder:
        if name in MODELS:
            # A programming mistake (two plug-ins, one name), so it keeps its traceback.
            raise ValueError(f"model {name!r} is already registered")
        if ":" in name:
            raise ValueError(f"model {name!r}: ':' is kept for the library families ({', '.join(FAMILIES)})")
        MODELS[name] = builder
        PRETRAINED_URLS[name] = tuple(pretrained_urls)
        return builder

    return decorator


def build_model(name: str, num_classes: int, *, output_stride: int = 16, pretrained: bool = True,
                args: dict | None = None) -> nn.Module:
    """The network of member `name` with `args` (see the module docstring)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    args = dict(args or {})
    prefix, sep, arch = name.partition(":")
    if sep:
        return family_of(name, prefix).build(name, arch, num_classes, pretrained=pretrained, args=args)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}{near(name, MODELS)}; registered: "
                        f"{', '.join(sorted(MODELS))}; or a library's: {USAGES}")
    return _call_registered(name, MODELS[name], num_classes, output_stride, pretrained, args)


def _call_registered(name: str, builder: Builder, num_classes: int, output_stride: int, pretrained: bool,
                     args: dict) -> nn.Module:
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    check_args(name, args, None if takes_any else named_keywords(builder))
    kwargs = dict(args)
    if "pretrained" in params or takes_any:
        kwargs["pretrained"] = pretrained
    if "output_stride" not in kwargs and ("output_stride" in params or takes_any):
        kwargs["output_stride"] = output_stride  # a member's args may choose its own
    try:
        model = builder(num_classes, **kwargs)
    except (TypeError, ValueError) as err:  # a value the builder refuses: the config's mistake
        raise UserError(f"member {name}: {refusal(err)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"member {name}: its builder returned {type(model).__name__}, not a torch.nn.Module; "
                        "a registered builder returns the network")
    return model


def names_at_revision(names: list[str], revision: int) -> list[str]:
    """Today's names of the networks that `names` built at models `revision` (1: checkpoints
    written before revisions were recorded)."""
    for r in range(revision, MODELS_REVISION):
        names = [_RENAMED_AFTER[r].get(name, name) for name in names]
    return names


def import_user_modules(modules) -> None:
    """Import modules named by `--import` (or a run's `imports`), so the models they register are known."""
    for module in modules:
        if not isinstance(module, str) or not module or module.startswith("."):
            raise UserError(f"--import {module!r}: expected a module's full name, e.g. mypkg.models")
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"--import {module}: {err}") from None
        except SystemExit as stop:  # a module that ends the program on import would end iwu without a word
            raise UserError(f"--import {module}: the module called sys.exit({stop.code!r}) when imported") from None
        except Exception as err:  # the user's code failed: its error's last line, not a traceback of ours
            text = " ".join(str(err).split()) or "no message"
            raise UserError(f"--import {module}: importing it raised {type(err).__name__}: {text[:200]}") from None
