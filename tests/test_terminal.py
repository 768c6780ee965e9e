"""Passes over files: a bar on a terminal, one plain line in a log."""

import iwu.util.bars
from iwu.util.bars import bar


def test_a_log_gets_one_line_and_every_item(capsys):
    assert list(bar(range(5), desc="caching x train at 64", unit="img")) == [0, 1, 2, 3, 4]
    assert list(bar(iter("ab"), desc="synth voc", unit="img", total=2)) == ["a", "b"]
    assert list(bar(iter("ab"), desc="check", unit="pair")) == ["a", "b"]
    err = capsys.readouterr().err
    assert err == "caching x train at 64: 5 img\nsynth voc: 2 img\ncheck: ? pair\n"  # no carriage returns


def test_a_terminal_gets_a_live_bar(capsys, monkeypatch):
    monkeypatch.setattr(iwu.util.bars, "watched", lambda: True)
    assert list(bar(range(3), desc="predict", unit="img")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" in err and "predict: 100%" in err and "3/3" in err
