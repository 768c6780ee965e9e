"""The house rules that keep names in one place: constants and run-directory names are defined once."""

import ast
from pathlib import Path

import iwu.engine.run_dir as rundir

PACKAGE = Path(__file__).parents[1] / "src" / "iwu"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _assigned_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_shared_constants_are_defined_only_in_iwu_constants():
    shared = {"IGNORE_INDEX", "ENSEMBLE", "IMAGE_SUFFIXES"}
    for path in SOURCES:
        if path.name != "constants.py":
            assert not _assigned_names(path) & shared, f"{path.relative_to(PACKAGE)} defines {_assigned_names(path) & shared}"


def test_no_default_spells_the_ignore_index_as_a_number():
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arguments):
                named = [*node.posonlyargs, *node.args][-len(node.defaults):] if node.defaults else []
                pairs = [*zip(named, node.defaults), *zip(node.kwonlyargs, node.kw_defaults)]
                bad = [a.arg for a, d in pairs if a.arg == "ignore_index" and isinstance(d, ast.Constant)]
                assert not bad, f"{path.relative_to(PACKAGE)}: ignore_index defaults to a number, not IGNORE_INDEX"


def test_run_directory_names_are_spelled_only_in_rundir():
    # (CHECKPOINTS and LOCK are plain words too: an argument of `iwu import`, the cache store's lock)
    names = {rundir.FINAL, rundir.CONFIG, rundir.LAST, rundir.BEST_ENSEMBLE, rundir.CURVES,
             rundir.METRICS.name, rundir.EVAL_GLOB}
    for path in SOURCES:
        if path.name != "run_dir.py":
            spelled = _string_constants(path) & names
            assert not spelled, f"{path.relative_to(PACKAGE)} spells {spelled}; import them from iwu.engine.run_dir"
