""""Did you mean ...?": the known names closest to one a user misspelt, for every message that refuses a name.

    close_matches("Fog", ["fog", "night"])                      # ['fog']      (case alone differs)
    close_matches("hfilp", ["hflip", "vflip"])                  # ['hflip']
    did_you_mean("Unett", ["Unet", "FPN"], " (did you mean {}?)")  # ' (did you mean Unet?)'
    close_matches("median", ["inverse", "median_frequency"])    # ['median_frequency'] (its beginning)
    did_you_mean("xyz", ["Unet"])                               # ''           (nothing close: no hint)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# How alike (difflib's ratio, 0 to 1) a known name must be to be suggested. difflib's own default:
# one wrong, missing or swapped letter in a name of four or more letters still passes.
CUTOFF = 0.6
PREFIX = 3  # the fewest letters of a name's beginning that suggest it (two would match half of any list)


def close_matches(word: str, choices: Iterable[str], n: int = 1, *, cutoff: float = CUTOFF) -> list[str]:
    """Up to `n` of `choices` close to `word`, the closest first: those equal to it but for case, then
    those it begins (a word of PREFIX letters or more: `median` for `median_frequency`, which difflib's
    ratio of the whole names misses), both in the order of `choices`, then difflib's matches at `cutoff`
    or above (best first), each name once."""
    choices = list(choices)
    same = [c for c in choices if c.lower() == word.lower()]
    begun = [c for c in choices if len(word) >= PREFIX and c.lower().startswith(word.lower())]
    alike = difflib.get_close_matches(word, choices, n=n, cutoff=cutoff)
    return list(dict.fromkeys(same + begun + alike))[:n]


def did_you_mean(word: str, choices: Iterable[str], form: str = "did you mean {}?", *, n: int = 1,
                 join: str = " or ", cutoff: float = CUTOFF) -> str:
    """`form` with `close_matches(word, choices, n)` joined by `join` in its `{}`; "" when none is close,
    so a message reads the same with or without a suggestion."""
    close = close_matches(word, choices, n, cutoff=cutoff)
    return form.format(join.join(close)) if close else ""
