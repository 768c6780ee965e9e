"""The table of dataset kinds: every row's module holds what the row says, every consumer reads the table,
and a new kind is its reader module plus one row."""

import sys
from pathlib import Path

import pytest

from iwu.cli import main
from iwu.data import kinds
from iwu.data.common import PairDataset
from iwu.data.sources import build_dataset, image_statistics, list_samples, parse_data_spec
from iwu.data.synthetic import LAYOUTS
from iwu.errors import UserError

HELPERS = Path(__file__).parent / "helpers"


@pytest.mark.parametrize("kind", kinds.TABLE, ids=lambda k: k.name)
def test_every_row_names_a_reader_a_lister_and_its_classes(kind):
    reader = kind.load(kind.reader)
    assert issubclass(reader, PairDataset) and reader.kind == kind.name
    assert callable(kind.load(kind.lister))
    if kind.fixed_classes:
        assert all(isinstance(c, str) for c in kind.load("CLASSES"))


def test_the_synthetic_layouts_are_the_rows_marked_synthetic():
    assert set(LAYOUTS) == set(kinds.SYNTHETIC_LAYOUTS)


def test_the_spec_help_names_every_kind():
    assert kinds.spec_help() == ("use cityscapes:ROOT, acdc:ROOT[:fog,night,rain,snow], kvasir:ROOT, voc:ROOT "
                                 "or folder:ROOT")


@pytest.fixture
def tiny_kind(monkeypatch):
    """The kind `tiny` (tests/helpers/tiny_kind.py) added as one row of the table, nothing else."""
    monkeypatch.syspath_prepend(str(HELPERS))
    row = kinds.Kind("tiny", "tiny_kind", "Tiny", "list_tiny", "tiny:ROOT", ("classes",), fixed_classes=False)
    monkeypatch.setattr(kinds, "TABLE", (*kinds.TABLE, row))
    monkeypatch.setattr(kinds, "KINDS", (*kinds.KINDS, "tiny"))
    monkeypatch.setattr(kinds, "BY_NAME", {**kinds.BY_NAME, "tiny": row})
    yield row
    sys.modules.pop("tiny_kind", None)


def test_a_new_kind_is_its_reader_module_and_one_row(tiny_kind, tmp_path, capsys):
    import tiny_kind as module

    root = module.write_tiny(tmp_path / "tiny")
    source = parse_data_spec(f"tiny:{root}")
    assert source == {"kind": "tiny", "root": str(root)}
    dataset = build_dataset({**source, "classes": ["ground", "thing"]}, "train", size=8)
    assert len(dataset) == 2 and dataset.classes == ("ground", "thing") and tuple(dataset[0]["label"].shape) == (8, 8)
    samples, problems = list_samples(source, "val")
    assert len(samples) == 1 and problems == []
    assert image_statistics("tiny") == (module.Tiny.mean, module.Tiny.std)
    assert main(["prepare", "--data", f"tiny:{root}", "--check"]) == 0
    assert "ok: tiny:" in capsys.readouterr().out


def test_an_unknown_kind_names_every_kind_of_the_table(tiny_kind):
    with pytest.raises(UserError, match="tiny:ROOT"):
        parse_data_spec("nope:/data")
