"""Shared files that expand without bound are refused in one line: YAML alias bombs, self-references, deep JSON."""

import json
import time

import pytest

from iwu.util.bounded import MAX_DEPTH, check_bounded
from iwu.cli import main
from iwu.config.schema import load_config
from iwu.errors import UserError

# 12 lines, 9^10 values once walked: what `iwu train` hung on, under a free-form key
BOMB = "experiment: bomb\nslurm:\n  additional:\n    a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
    f"*a{i - 1}]\n" for i in range(1, 10))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"bomb.yaml: expands to more than 100,000 values.*aliases"):
        load_config(path)
    assert time.perf_counter() - start < 5
    assert main(["train", str(path)]) == 2
    assert "expands to more than" in capsys.readouterr().err


def test_a_self_referencing_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("slurm:\n  additional: &me {again: *me}\n")
    with pytest.raises(UserError, match="loop.yaml: refers to itself"):
        load_config(path)
    with pytest.raises(UserError, match="override slurm.additional: refers to itself"):
        load_config(_empty(tmp_path), ["slurm.additional=&x [*x]"])


def _empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("experiment: e\n")
    return path


def test_deep_and_wide_trees_are_bounded_but_real_configs_pass(tmp_path):
    deep = current = []
    for _ in range(MAX_DEPTH + 1):
        current.append([])
        current = current[0]
    with pytest.raises(UserError, match=f"nests deeper than {MAX_DEPTH} levels"):
        check_bounded(deep, "x")
    with pytest.raises(UserError, match="expands to more than"):
        check_bounded(list(range(200_000)), "x")
    check_bounded({"a": [1, 2, {"b": "c"}]}, "x")  # an ordinary tree passes
    shared = [1, 2]
    check_bounded({"a": shared, "b": shared}, "x")  # a value used twice is not a cycle


def test_a_deeply_nested_final_json_is_one_line_in_the_report(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "final.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["report", str(tmp_path)]) == 2
    assert "final.json: nests deeper than Python can read" in capsys.readouterr().err
    nested = {"x": None}
    for _ in range(150):
        nested = {"x": nested}
    (run / "final.json").write_text(json.dumps(nested))
    assert main(["report", str(tmp_path)]) == 2
    assert f"final.json: nests deeper than {MAX_DEPTH} levels" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["train", "configs/demo.yaml", "seed=-1"], "seed: expected an integer from 0 to 4294967295"),
    (["train", "configs/demo.yaml", "seed=4294967296"], "seed: expected an integer from 0 to 4294967295"),
    (["train", "configs/demo.yaml", "data.size=100000"], "data.size: expected an integer from 1 to 4096"),
    (["sweep", "configs/demo.yaml", "--seeds", "99999999999", "--dry-run"], "a sweep takes at most 10,000"),
    (["sweep", "configs/demo.yaml", "--seeds", "3000000", "--dry-run"], "3,000,000 seeds"),
    (["sweep", "configs/demo.yaml", "--seeds", "4294967290-4294967299", "--dry-run"], "seeds go up to 4294967295"),
    (["evaluate", "RUN", "--data", "cityscapes:/x", "--size", "100000"], "argument --size: 100000 is above 4096"),
    (["evaluate", "RUN", "--data", "cityscapes:/x", "--uncertainty-threshold", "nan"], "'nan' is not a finite"),
])
def test_out_of_range_numbers_are_one_line_before_any_work(args, words, capsys, monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    if args[0] == "train":
        args = [*args, f"out={tmp_path / 'run'}"]
    start = time.perf_counter()
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and time.perf_counter() - start < 10
