"""A member's `args` against its builder: which keywords iwu sets itself, which the builder names, and a
builder's refusal as one line. Shared by the registered builders and the library families."""

from __future__ import annotations

import inspect
import traceback
from pathlib import Path

from iwu.errors import UserError
from iwu.util.suggest import did_you_mean

# Set by iwu, never by a member's `args`: the class count and where the weights come from.
RESERVED = ("num_classes", "classes", "pretrained", "weights", "weights_backbone", "encoder_weights")


def near(word: str, choices) -> str:
    """" (did you mean X or Y?)" naming up to three of `choices` close to `word`; "" when none is."""
    return did_you_mean(word, choices, " (did you mean {}?)", n=3)


def named_keywords(function) -> list[str]:
    """The keyword arguments `function` names in its signature, iwu's own left out."""
    return [n for n, p in inspect.signature(function).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in RESERVED]


def check_args(member: str, args: dict, takes: list[str] | None) -> None:
    """No key of `args` is iwu's, and each is one of `takes` (None: the builder takes any)."""
    for key in args:
        if key in RESERVED:
            raise UserError(f"member {member}: args.{key} is set by iwu (the dataset's classes, "
                            "model.pretrained); leave it out")
        if takes is not None and key not in takes:
            raise UserError(f"member {member}: unknown argument {key!r}{near(key, takes)}; "
                            f"it takes: {', '.join(takes) or 'none'}")


def refusal(err: BaseException) -> str:
    """A builder's exception as one line; a bare `assert` says where it failed."""
    text = " ".join(str(err).split())
    if text:
        return text[:300]
    where = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__} at {Path(where.filename).name}:{where.lineno}: {where.line} (a value it refuses?)"
