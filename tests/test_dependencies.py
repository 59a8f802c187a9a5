"""pyproject.toml declares what the code needs: every third-party module that the package
and the stages import is a runtime dependency (whatever installs it today as someone
else's dependency), a module only the tests import is a dev dependency, and the lower
bounds reach the APIs the code calls."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from imports import ROOT


def requirements(lines: list[str]) -> dict[str, dict[str, str]]:
    """``{"dvc": {">=": "3.50", "<": "4"}, ...}`` from PEP 508 lines such as
    ``dvc[ssh]>=3.50,<4`` (names lower-cased)."""
    out = {}
    for line in lines:
        name, rest = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?(.*)", line).groups()
        out[name.lower()] = dict(re.match(r"\s*(>=|<=|==|~=|<|>)\s*(\S+)", spec.strip()).groups()
                                 for spec in rest.split(",") if spec.strip())
    return out


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME = requirements(PYPROJECT["project"]["dependencies"])
DEV = requirements(PYPROJECT["dependency-groups"]["dev"])
# Import names whose distribution is spelled otherwise.
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn",
                "ruamel": "ruamel.yaml", "onnxruntime": "onnxruntime",
                "markdown_it": "markdown-it-py"}
# Runtime dependencies that the code does not import by name: pydicom's decoders (found
# as plugins), onnxscript (torch.onnx's exporter) and gto (the model registry's command).
NOT_IMPORTED = {"pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "python-gdcm", "pyjpegls",
                "onnxscript", "gto"}


def third_party_imports(*folders: str) -> set[str]:
    """Top-level names of the modules that the files under ``folders`` import."""
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    local = {"medpipe", "stages", "bench", "tests", "__future__"}
    local |= {p.stem for p in (ROOT / "tests").glob("*.py")}
    return {n for n in names if n not in local and n not in sys.stdlib_module_names}


def distribution(module: str) -> str:
    return DISTRIBUTION.get(module, module).lower()


def test_every_module_the_code_imports_is_a_runtime_dependency() -> None:
    undeclared = sorted(m for m in third_party_imports("medpipe", "stages")
                        if distribution(m) not in RUNTIME)
    assert undeclared == []


def test_every_runtime_dependency_is_imported_by_the_code() -> None:
    imported = {distribution(m) for m in third_party_imports("medpipe", "stages")}
    unused = sorted(set(RUNTIME) - imported - NOT_IMPORTED)
    assert unused == []


def test_modules_only_the_tests_import_are_dev_dependencies() -> None:
    code = {distribution(m) for m in third_party_imports("medpipe", "stages")}
    tests_only = {distribution(m) for m in third_party_imports("tests")} - code
    known = {d for d in tests_only if _installed(d)}
    assert sorted(d for d in known if d not in DEV and d not in RUNTIME) == []
    assert "imagehash" in DEV and "imagehash" not in RUNTIME


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_lower_bounds_reach_the_apis_the_code_calls() -> None:
    # pydicom.pixels (decoders, LUTs) is new in pydicom 3.0; ImageFont.load_default(size=)
    # in Pillow 10.1; np.bitwise_count in numpy 2.0, and so the first pandas, scipy and
    # scikit-learn built for numpy 2; torch 2.5's ONNX exporter fails on a dynamic batch.
    needs = {"pydicom": "3.0", "pillow": "10.1", "numpy": "2.0", "pandas": "2.2.2",
             "scipy": "1.13", "scikit-learn": "1.4.2", "torch": "2.6"}
    too_low = {name: RUNTIME[name].get(">=") for name, least in needs.items()
               if ">=" not in RUNTIME[name] or version(RUNTIME[name][">="]) < version(least)}
    assert too_low == {}


def test_dvc_is_capped_below_its_next_major_release() -> None:
    """medpipe share calls DVC's Python API (Repo, its config errors), which a major
    release may change."""
    assert RUNTIME["dvc"].get("<") == "4", RUNTIME["dvc"]

