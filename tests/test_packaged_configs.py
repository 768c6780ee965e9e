"""The configs ship inside the package and are found by name; a file that exists wins over a name."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from iwu.cli import main
from iwu.config.schema import load_config
from iwu.errors import UserError
from iwu.config.packaged import find_config, packaged_config_names, packaged_configs_dir

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "iwu"


def packaged_files() -> list[Path]:
    return sorted(p for p in (PACKAGE / "configs").rglob("*") if p.is_file())


def test_the_folder_is_the_installed_package_one_and_the_checkout_links_to_it():
    assert packaged_configs_dir().resolve() == (PACKAGE / "configs").resolve()
    link = ROOT / "configs"
    assert link.is_symlink() and os.readlink(link) == "src/iwu/configs"  # relative: the checkout may move


def test_package_data_declares_every_file_in_the_folder():
    # what the wheel carries, without building one: setuptools globs these patterns under src/iwu
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["iwu"]
    declared = {p for pattern in patterns for p in PACKAGE.glob(pattern)}
    assert packaged_files() and set(packaged_files()) <= declared


def test_every_yaml_is_listed_and_found_by_name():
    yamls = [p for p in packaged_files() if p.suffix == ".yaml"]
    names = packaged_config_names()
    assert names == sorted(p.relative_to(PACKAGE / "configs").with_suffix("").as_posix() for p in yamls)
    assert {"demo", "paper/acdc_ensemble", "paper/cityscapes_ensemble", "ablations/synthetic",
            "examples/mixed_ensemble"} <= set(names)
    for name, path in zip(names, sorted(yamls)):
        for text in (name, f"{name}.yaml", f"configs/{name}.yaml"):
            assert find_config(text).resolve() == path.resolve(), text


def test_names_load_from_anywhere_with_their_bases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: only the package can answer
    for name in packaged_config_names():
        assert load_config(name) == load_config(PACKAGE / "configs" / f"{name}.yaml"), name
    # three levels of base: (acdc_ensemble -> acdc -> base) and one across folders (examples -> paper)
    ensemble = load_config("paper/acdc_ensemble.yaml", ["data.root=/data/acdc"])
    assert (ensemble.experiment, ensemble.data.kind) == ("acdc_ensemble", "acdc")
    assert ensemble.data.root == "/data/acdc"
    assert ensemble.model.bn_momentum == 0.01 and len(ensemble.members) == 3
    assert load_config("examples/smp_ensemble").data.kind == "acdc"


def test_a_file_that_exists_wins_over_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "acdc_ensemble.yaml").write_text("experiment: mine\n")
    assert load_config("paper/acdc_ensemble.yaml").experiment == "mine"
    assert load_config("paper/acdc_ensemble").experiment == "acdc_ensemble"  # no file of that name here
    with pytest.raises(UserError, match="paper: cannot read the config"):  # a folder is read, not looked up
        load_config("paper")


def test_an_unknown_name_is_one_line_with_near_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        find_config("paper/acdc_ensmble")
    message = str(err.value)
    assert message == ("paper/acdc_ensmble: no such config file, nor a config that ships with iwu; did you mean "
                       "paper/acdc_ensemble, paper/acdc_mobilenet, paper/acdc_resnet50? "
                       "`iwu train --list-configs` lists them")
    with pytest.raises(UserError, match=r"^nothing\.yaml: no such config file, .*; `iwu train --list-configs`"):
        find_config("nothing.yaml")
    for command in ("train", "sweep", "weights"):
        args = [command, "paper/nope"] + (["--seeds", "1", "--dry-run"] if command == "sweep" else [])
        assert main(args) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"iwu {command}: error: paper/nope: no such config file, nor a config that ships with iwu; "
            "`iwu train --list-configs` lists them"]


@pytest.mark.parametrize("command", ["train", "sweep", "weights", "config"])
def test_list_configs_prints_every_name_and_its_file(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--list-configs"])  # no CONFIG needed, as with --help
    assert done.value.code == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [name for name, _ in rows] == packaged_config_names()
    assert all(Path(path) == packaged_configs_dir() / f"{name}.yaml" for name, path in rows)


def test_listing_into_a_closed_pipe_ends_quietly():
    lister = subprocess.Popen([sys.executable, "-m", "iwu", "config", "--list-configs"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    lister.stdout.close()  # the reader is gone before the first line, as with `| head -0`
    assert lister.wait(timeout=60) == 141
    assert lister.stderr.read() == b""
