"""Every command's help describes every argument, lists the registries as they are, and its examples parse."""

import argparse
import shlex
from pathlib import Path

import pytest

from iwu.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # wrapped lines joined


def test_every_argument_of_every_command_is_described():
    commands = _commands()
    assert {"train", "config", "sweep", "evaluate", "predict", "masks", "prepare"} <= set(commands)
    undescribed = [f"{name} {a.dest}" for name, p in commands.items() for a in p._actions
                   if not (a.help or "").strip()]
    assert undescribed == []


def test_help_of_every_command_prints_and_fills_in_the_registries(capsys):
    for name in _commands():
        text = _help(capsys, name)
        assert f"usage: iwu {name}" in text
        assert "{kinds}" not in text and "{modes}" not in text


def test_train_help_lists_every_registered_mode_and_the_common_overrides(capsys, monkeypatch):
    from iwu.method.modes import MODES

    monkeypatch.setitem(MODES, "probe_mode", MODES["standard"])  # registered after the parser's module was read
    text = _help(capsys, "train")
    assert all(mode in text for mode in MODES)
    assert "config --show" in text
    assert all(key in text for key in ("out=", "seed=", "resume=true", "mode=", "trainer.max_steps="))
    sweep = _help(capsys, "sweep")
    assert all(mode in sweep for mode in MODES)


def test_data_options_list_every_dataset_kind(capsys, monkeypatch):
    from iwu.data import kinds

    monkeypatch.setattr(kinds, "KINDS", (*kinds.KINDS, "probe_kind"))
    for command in ("evaluate", "masks", "prepare"):
        text = _help(capsys, command)
        assert all(kind in text for kind in kinds.KINDS), command


def test_defaults_and_choices_are_shown(capsys):
    text = _help(capsys, "evaluate")
    assert "--split SPLIT which split of the dataset, e.g. train, val or test (default: val)" in text
    assert "--workers WORKERS processes decoding images (default: 0)" in text
    assert "--overwrite replace prediction PNGs already at the output names (default: refuse)" in text
    assert "(default: False)" not in text and "(default: None)" not in text  # nothing said twice or of nothing
    assert "--format {onnx,torchscript} file format (default: onnx)" in _help(capsys, "export")


def test_every_example_parses_and_the_config_examples_run(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the configs/ paths as written
    parser = build_parser()
    examples = [shlex.split(line, comments=True) for p in _commands().values()
                for line in (p.epilog or "").splitlines() if line.startswith("  iwu ")]
    assert {argv[1] for argv in examples} >= {"train", "config", "sweep", "evaluate", "predict", "masks", "prepare"}
    for argv in examples:
        argv = argv[1: argv.index(">") if ">" in argv else None]
        args, extra = parser.parse_known_args(argv)
        assert all("=" in a for a in extra) and hasattr(args, "overrides") or not extra, argv
        if argv[0] == "config":
            assert main(argv) == 0, capsys.readouterr().err
