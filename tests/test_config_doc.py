"""`iwu config --show`: every key with its value, default and meaning; meanings read from the fields' comments."""

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iwu.cli import main
from iwu.config.schema import RunConfig, load_config
from iwu.config.doc import config_dataclasses, field_meanings

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@dataclass
class Base:
    size: int = 4  # side in pixels


@dataclass
class Commented(Base):
    """A docstring is no field."""

    # a comment on its own line belongs to no field
    name: str = "x"  # what it is called
    plain: int = 0
    size: int = 8  # the side, overridden
    items: list = field(  # several lines,
        default_factory=list)  # one meaning
    pragma: int = 1  # noqa: E501

    def method(self) -> int:
        inner: int = 2  # not a field
        return inner


def test_meanings_are_the_trailing_comments_of_the_fields():
    assert field_meanings(Commented) == {"name": "what it is called", "size": "the side, overridden",
                                         "items": "several lines, one meaning"}
    assert field_meanings(Base) == {"size": "side in pixels"}


def test_every_config_key_has_a_meaning():
    """A new key needs its trailing comment: `iwu config --show` prints it as the key's meaning."""
    classes = config_dataclasses(RunConfig)
    assert {c.__name__ for c in classes} >= {"RunConfig", "MemberConfig", "TrainerConfig", "SlurmConfig"}
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
               if not field_meanings(c).get(f.name)]
    assert missing == []


def _show(capsys, *argv: str) -> str:
    assert main(["config", "--show", str(DEMO), *argv]) == 0
    return capsys.readouterr().out


def _documented(obj, depth=0):
    """(depth, key, meaning) of every field, in the order `--show` prints them."""
    for f in dataclasses.fields(obj):
        yield depth, f.name, field_meanings(type(obj))[f.name]
        value = getattr(obj, f.name)
        for item in value if isinstance(value, list) else [value]:
            if dataclasses.is_dataclass(item):  # a list's items two steps in: "  - key" then "    key"
                yield from _documented(item, depth + 1 + isinstance(value, list))


def test_show_prints_every_key_with_its_value_and_meaning(capsys):
    out = _show(capsys, "seed=3")
    config = load_config(DEMO, ["seed=3"])
    lines = [line for line in out.splitlines() if " # " in line and not line.startswith("#")]
    expected = list(_documented(config))
    assert len(lines) == len(expected)
    for line, (depth, key, meaning) in zip(lines, expected):
        text, note = line.split(" # ", 1)
        aligned = text.replace("- ", "  ", 1) if text.lstrip().startswith("- ") else text
        assert aligned.startswith("  " * depth + f"{key}:"), (line, key)
        assert note.startswith(meaning), (line, meaning)
    seed = next(line for line in lines if line.startswith("seed:"))
    assert seed.split()[:2] == ["seed:", "3"]
    assert seed.endswith("# seeds the weights, the data order and the augmentation (default: 0)")
    mode = next(line for line in lines if line.startswith("mode:"))
    assert "(default:" not in mode  # the same as the default: not repeated
    size = next(line for line in lines if line.startswith("  size:"))  # the data section, typed like the rest
    assert size.startswith("  size: 96 ") and size.endswith("(default: 768)") and "resized" in size


@pytest.mark.parametrize("plain", [False, True])
def test_printed_config_reads_back_as_the_same_config(capsys, tmp_path, plain):
    out = _show(capsys, "seed=3", "slurm.time='2-00:00:00'", *(["--yaml"] if plain else []))
    assert ("#" in out) != plain
    written = tmp_path / "shown.yaml"
    written.write_text(out)
    assert load_config(written) == load_config(DEMO, ["seed=3", "slurm.time='2-00:00:00'"])


@pytest.mark.parametrize("argv, message", [
    (["config", "--show", "missing.yaml"], "missing.yaml: no such config file, nor a config that ships with iwu"),
    (["config", "--show", str(DEMO), "sed=3"], "sed: unknown key; did you mean seed?"),
    (["config", "--show", str(DEMO), "mode=nope"], "mode: unknown mode 'nope'"),
])
def test_bad_config_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("iwu config: error: ") and message in err


def test_show_imports_no_torch():
    """Reading a config is instant: the datasets and models stay unloaded."""
    code = (f"import sys, iwu.cli; iwu.cli.main(['config', '--show', {str(DEMO)!r}]); "
            "print('torch' in sys.modules, 'lightning' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False False"


def test_every_packaged_config_reads_back_from_its_shown_form(tmp_path):
    """Long values (a torchvision member's name, a long experiment) must keep a space before the comment."""
    from iwu.config.doc import show_config
    from iwu.config.packaged import packaged_config_names

    overrides = ["experiment=an_experiment_with_a_name_long_enough_to_reach_the_comments_column"]
    for name in packaged_config_names():
        if name.endswith("base"):
            continue  # partial configs that the others build on
        written = tmp_path / f"{name.replace('/', '_')}.yaml"
        written.write_text(show_config(load_config(name, overrides)))
        assert load_config(written) == load_config(name, overrides), name
