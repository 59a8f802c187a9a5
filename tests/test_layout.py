"""The package layout: no import cycles (lazy imports included), and each step imports only
what lies below it, so that inference never pulls in the training loop and prediction
never pulls in the dataset sources."""

from __future__ import annotations

import pytest
from imports import ROOT, imported_files, imports_of, package_files

# A package may import from the packages listed for it (and from itself).
ALLOWED = {
    "medpipe/params": set(),
    "medpipe/utils": set(),
    "medpipe/data": {"medpipe/utils"},
    "medpipe/models": {"medpipe/utils"},
    "medpipe/evaluation": {"medpipe/utils", "medpipe/data", "medpipe/models"},
    "medpipe/inference": {"medpipe/utils", "medpipe/data", "medpipe/models",
                          "medpipe/evaluation"},
    "medpipe/training": {"medpipe/utils", "medpipe/data", "medpipe/models",
                         "medpipe/inference", "medpipe/evaluation"},
    "medpipe/planning": {"medpipe/utils", "medpipe/data", "medpipe/models", "medpipe/training"},
    "medpipe/commands": {"medpipe/utils", "medpipe/data", "medpipe/models",
                         "medpipe/inference", "medpipe/evaluation", "medpipe/planning"},
}
# Every package may import these: the error type, the task and the params.
BOTTOM_PACKAGES = {"medpipe/params"}
BOTTOM = {"medpipe/__init__.py", "medpipe/task.py"}


def package_of(path: str) -> str | None:
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else None


def cycles(files: list[str]) -> list[list[str]]:
    """Every import cycle among ``files`` (one path per strongly connected component)."""
    graph = {f: sorted(imports_of(f)) for f in files}
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, []):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for f in files:
        if f not in state:
            visit(f, [f])
    return found


def test_no_import_cycles() -> None:
    files = package_files() + sorted(p.relative_to(ROOT).as_posix()
                                     for p in (ROOT / "stages").glob("*.py"))
    assert cycles(files) == []


def test_the_cycle_finder_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    import imports

    edges = {"a.py": {"b.py"}, "b.py": {"c.py"}, "c.py": {"a.py"}, "d.py": set()}
    monkeypatch.setattr(imports, "imports_of", lambda f: edges[f])
    monkeypatch.setitem(globals(), "imports_of", lambda f: edges[f])
    assert cycles(sorted(edges)) == [["a.py", "b.py", "c.py", "a.py"]]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_lies_below(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    wrong = []
    for f in package_files():
        if package_of(f) != package:
            continue
        for target in imports_of(f):
            if target in BOTTOM or package_of(target) in BOTTOM_PACKAGES:
                continue
            if package_of(target) not in allowed:
                wrong.append(f"{f} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("start", ["stages/evaluate.py", "medpipe/commands/predict.py",
                                   "medpipe/commands/export.py"])
def test_inference_and_evaluation_never_import_the_training_loop(start: str) -> None:
    assert sorted(f for f in imported_files(start) if f.startswith("medpipe/training")) == []


def test_prediction_imports_no_dataset_source_code() -> None:
    reached = imported_files("medpipe/commands/predict.py")
    assert sorted(f for f in reached if f.startswith("medpipe/data/sources")
                  or f in ("medpipe/data/prepare.py", "medpipe/data/raw.py")) == []


MAX_MODULE_LINES = 300  # a module is read whole: a few hundred lines at most
MAX_FUNCTION_LINES = 60  # a function fits on a screen


def _python_files(*folders: str) -> list:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_modules_stay_short() -> None:
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _python_files("medpipe", "stages")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == [], f"split these modules (over {MAX_MODULE_LINES} lines)"


def test_functions_stay_short() -> None:
    import ast

    long = []
    for p in _python_files("medpipe", "stages", "bench"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert long == [], f"split these functions (over {MAX_FUNCTION_LINES} lines)"
