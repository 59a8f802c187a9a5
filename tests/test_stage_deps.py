"""dvc.yaml lists, for every stage, each medpipe module its code imports.

A module missing from a stage's deps is a silent reproducibility bug: a change to it
leaves `dvc repro` and `dvc status` saying "up to date" over outputs the new code
would compute differently. So the imports are followed here, statically, from each
stage's module (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]

# Modules that cannot change what a stage writes, so that editing them reruns nothing.
NO_EFFECT_ON_OUTPUTS = {
    "medpipe/__init__.py": "PipelineError and the package docstring",
    "medpipe/cli.py": "argument parsing, logging set-up, the one-line error exit",
    "medpipe/gpus.py": "which free GPU a process is pinned to",
}


def medpipe_imports(path: Path) -> set[str]:
    """Dotted names of the medpipe modules ``path`` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "medpipe":
                names |= {f"medpipe.{alias.name}" for alias in node.names}
            elif node.module.startswith("medpipe."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("medpipe.")}
    return names


def source_of(name: str) -> str | None:
    """The file of a medpipe module or package, relative to the project; None for a
    name that is not a module (``from medpipe import PipelineError``)."""
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / candidate).exists():
            return candidate
    return None


def imported_files(start: str) -> set[str]:
    found, todo = set(), [start]
    while todo:
        for name in medpipe_imports(ROOT / todo.pop()):
            path = source_of(name)
            if path is not None and path not in found:
                found.add(path)
                todo.append(path)
    return found


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_imported_medpipe_module_is_a_dependency(stage: str) -> None:
    deps = [d for d in STAGES[stage]["deps"] if isinstance(d, str)]
    assert f"stages/{stage}.py" in deps
    missing = sorted(path for path in imported_files(f"stages/{stage}.py")
                     if path not in NO_EFFECT_ON_OUTPUTS and not covered(path, deps))
    assert missing == [], f"dvc.yaml, stage {stage}: add to deps: {', '.join(missing)}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_listed_code_dependency_exists(stage: str) -> None:
    code = [d for d in STAGES[stage]["deps"]
            if isinstance(d, str) and d.startswith(("medpipe", "stages"))]
    assert [d for d in code if not (ROOT / d).exists()] == []


def test_the_import_walk_follows_lazy_and_package_imports() -> None:
    """Guards the walk itself: stages.evaluate reaches medpipe.distributed only through
    medpipe.engine, and stages.download imports the medpipe.sources package."""
    assert "distributed" not in (ROOT / "stages/evaluate.py").read_text(encoding="utf-8")
    assert {"medpipe/engine.py", "medpipe/distributed.py"} <= imported_files(
        "stages/evaluate.py")
    assert "medpipe/sources/__init__.py" in imported_files("stages/download.py")
