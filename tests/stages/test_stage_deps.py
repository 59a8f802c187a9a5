"""dvc.yaml lists, for every stage, each medpipe module its code imports.

A module missing from a stage's deps is a silent reproducibility bug: a change to it
leaves `dvc repro` and `dvc status` saying "up to date" over outputs the new code
would compute differently. So the imports are followed here, statically, from each
stage's module (lazy imports inside functions included)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from imports import ROOT, docstring_only, imported_files

# A foreach stage (external test sets) is checked through its template.
STAGES = {name: stage.get("do", stage) for name, stage in
          yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"].items()}

# Modules that cannot change what a stage writes, so that editing them reruns nothing.
NO_EFFECT_ON_OUTPUTS = {
    "medpipe/__init__.py": "PipelineError and the package docstring",
    "medpipe/utils/cli.py": "argument parsing, logging set-up, the one-line error exit",
    "medpipe/utils/gpus.py": "which free GPU a process is pinned to",
}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def needs_listing(path: str) -> bool:
    return path not in NO_EFFECT_ON_OUTPUTS and not docstring_only(ROOT / path)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_imported_medpipe_module_is_a_dependency(stage: str) -> None:
    deps = [d for d in STAGES[stage]["deps"] if isinstance(d, str)]
    assert f"stages/{stage}.py" in deps
    missing = sorted(path for path in imported_files(f"stages/{stage}.py")
                     if needs_listing(path) and not covered(path, deps))
    assert missing == [], f"dvc.yaml, stage {stage}: add to deps: {', '.join(missing)}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_listed_code_dependency_exists_and_is_used(stage: str) -> None:
    """No stale entry: a listed module the stage does not import would rerun it for
    nothing (the evaluate stage must not rerun when the training loop changes)."""
    code = [d for d in STAGES[stage]["deps"]
            if isinstance(d, str) and d.startswith(("medpipe", "stages"))]
    assert [d for d in code if not (ROOT / d).exists()] == []
    used = imported_files(f"stages/{stage}.py") | {f"stages/{stage}.py"}
    unused = [d for d in code if not any(covered(path, [d]) for path in used)]
    assert unused == [], f"dvc.yaml, stage {stage}: not imported: {', '.join(unused)}"


def test_the_import_walk_follows_lazy_and_package_imports() -> None:
    """Guards the walk itself: stages.train reaches medpipe.training.distributed through
    medpipe.training.loop, and `from medpipe.data import sources` counts as an import
    of the package medpipe.data.sources."""
    assert {"medpipe/training/loop.py", "medpipe/training/distributed.py"} <= imported_files(
        "stages/train.py")
    assert "medpipe/data/sources/folder.py" in imported_files("stages/download.py")


def test_no_listed_dependency_is_a_docstring_only_package(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text('"""Only a docstring."""\n', encoding="utf-8")
    assert docstring_only(init)
    init.write_text('"""Doc."""\nVALUE = 1\n', encoding="utf-8")
    assert not docstring_only(init)
