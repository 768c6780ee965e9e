"""The one "did you mean" of the package: which known names it suggests, and how a message spells them."""

import pytest

from iwu.util.suggest import CUTOFF, close_matches, did_you_mean


@pytest.mark.parametrize("word, choices, n, expected", [
    ("hfilp", ["hflip", "vflip"], 1, ["hflip"]),  # a swapped pair of letters
    ("hfilp", ["hflip", "vflip"], 2, ["hflip", "vflip"]),  # the closest first
    ("seeed", ["seed", "val_every", "mode"], 1, ["seed"]),
    ("xyz", ["hflip", "vflip"], 3, []),  # nothing close: no suggestion
    ("Fog", ["fog", "night"], 1, ["fog"]),  # case alone differs
    ("FOG", ["night", "fog", "Fog"], 3, ["fog", "Fog"]),  # equal but for case, in the order of the choices
    ("Unet", ["Unet2", "UNET", "unet"], 2, ["UNET", "unet"]),  # those equal but for case before the alike
    ("Unet", ["Unet2", "UNET"], 3, ["UNET", "Unet2"]),  # and each name once
    ("resnet10", ["vgg", "resnet50", "resnet18", "resnet101"], 3, ["resnet101", "resnet50", "resnet18"]),
    ("anything", [], 1, []),
    ("median", ["inverse", "median_frequency", "effective_number"], 1, ["median_frequency"]),  # its beginning
    ("rare", ["shuffle", "rare_class"], 1, ["rare_class"]),  # which difflib's ratio misses (0.57)
    ("eff", ["inverse", "effective_number"], 1, ["effective_number"]),
    ("ef", ["inverse", "effective_number"], 1, []),  # two letters begin too many names to mean one
    ("res", ["vgg", "resnet50", "resnet18"], 2, ["resnet50", "resnet18"]),  # in the order of the choices
])
def test_close_matches(word, choices, n, expected):
    assert close_matches(word, choices, n) == expected


def test_close_matches_takes_any_iterable_of_names_and_one_cutoff():
    assert close_matches("sed", {"seed": 1, "mode": 2}) == ["seed"]  # a mapping: its keys
    assert close_matches("snw", (c for c in ("fog", "snow"))) == ["snow"]
    assert CUTOFF == 0.6
    assert close_matches("sd", ["seed"]) == ["seed"]  # ratio 0.67
    assert close_matches("sd", ["seed"], cutoff=0.75) == []
    assert close_matches("SEED", ["seed"], cutoff=1.0) == ["seed"]  # case never counts against a name


@pytest.mark.parametrize("args, kwargs, expected", [
    (("hfilp", ["hflip", "vflip"]), {}, "did you mean hflip?"),
    (("xyz", ["hflip", "vflip"]), {}, ""),
    (("cityscape", ["cityscapes", "acdc"], "; did you mean {}?"), {}, "; did you mean cityscapes?"),
    (("Unett", ["Unet", "FPN"], " (did you mean {}?)"), {"n": 3}, " (did you mean Unet?)"),
    (("resnet10", ["resnet101", "resnet50", "resnet18", "vgg"], " (did you mean {}?)"), {"n": 3},
     " (did you mean resnet101 or resnet50 or resnet18?)"),
    (("paper/acdc_ensmble", ["paper/acdc_ensemble", "paper/acdc_mobilenet", "paper/base"], "did you mean {}? "),
     {"n": 3, "join": ", ", "cutoff": 0.75}, "did you mean paper/acdc_ensemble, paper/acdc_mobilenet? "),
    (("paper/nope", ["paper/base", "paper/acdc"], "did you mean {}? "), {"n": 3, "cutoff": 0.75}, ""),
])
def test_did_you_mean_fills_the_form_or_says_nothing(args, kwargs, expected):
    assert did_you_mean(*args, **kwargs) == expected
