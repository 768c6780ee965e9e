"""The house rules that keep names in one place: constants and run-directory names are defined once."""

import ast
import re
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


# --- the layout: which part may import which, and no cycles ---------------------------------------------

ROOT = PACKAGE.parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SOURCES}


def _imports(path: Path) -> set[str]:
    """The iwu modules `path` imports anywhere in it (at the top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("iwu")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("iwu"):
            # `from iwu.models import registry` imports the module iwu.models.registry
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
    return {name for name in found if name in MODULES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def _imported_parts(part: str) -> dict[str, set[str]]:
    return {m: {_part(i) for i in imports} for m, imports in GRAPH.items() if _part(m) == part}


def test_the_method_imports_nothing_of_the_engine_the_commands_or_the_data():
    forbidden = {"engine", "commands", "data", "inference", "interop", "cli", "sweep", "report", "plots"}
    bad = {m: parts & forbidden for m, parts in _imported_parts("method").items() if parts & forbidden}
    assert not bad, f"the method reaches outside pure tensor code: {bad}"


def test_the_data_imports_nothing_of_the_engine_or_the_commands():
    forbidden = {"engine", "commands", "inference", "interop", "cli", "sweep", "report"}
    bad = {m: parts & forbidden for m, parts in _imported_parts("data").items() if parts & forbidden}
    assert not bad, f"data reaches into the engine or the commands: {bad}"


def test_no_import_cycle_in_the_package():
    """Tarjan's strongly connected components over every import, lazy ones included."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in GRAPH[v]:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other: {cycles}"


# --- comments name only what the repository holds --------------------------------------------------------

# repository files: code and documents by path, any document by name, packaged configs by their path
PATH_IN_TEXT = re.compile(r"(?<![\w./$<-])((?:[\w-]+/)+[\w.-]+\.(?:md|py)|[A-Za-z_-]+\.md|configs/[\w/.-]+\.yaml)\b")
MODULE_IN_TEXT = re.compile(r"(?<![\w./])(iwu(?:\.[a-z_]+)+)")


def _comments_and_docstrings(path: Path) -> list[str]:
    text = path.read_text()
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line and line.split("#", 1)[0].count('"') % 2 == 0]
    docs = [ast.get_docstring(n) or "" for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return comments + docs


def _exists(name: str, where: Path) -> bool:
    return any((base / name).exists() for base in (ROOT, ROOT / "src", PACKAGE, where.parent))


def test_no_comment_names_a_file_or_document_the_repository_does_not_hold():
    missing = []
    for path in [*SOURCES, *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]:
        for text in _comments_and_docstrings(path):
            if "DESIGN" in text:
                missing.append(f"{path.relative_to(ROOT)}: DESIGN")
            missing += [f"{path.relative_to(ROOT)}: {name}" for name in PATH_IN_TEXT.findall(text)
                        if not _exists(name, path)]
    assert not missing, missing


def test_every_iwu_module_a_comment_names_exists():
    def known(dotted: str) -> bool:
        parts = dotted.split(".")
        # a module, or a name one defines (iwu.method.modes.register_mode)
        return any(".".join(parts[:k]) in MODULES for k in range(len(parts), 1, -1)) and (
            dotted in MODULES or ".".join(parts[:-1]) in MODULES or ".".join(parts[:-2]) in MODULES)

    stale = [f"{path.relative_to(ROOT)}: {name}" for path in [*SOURCES, *sorted((ROOT / "tests").rglob("*.py"))]
             for text in _comments_and_docstrings(path) for name in MODULE_IN_TEXT.findall(text)
             if not known(name.rstrip("."))]
    assert not stale, stale
