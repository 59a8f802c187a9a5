"""The static import graph of the project's code, for the layout tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> str | None:
    """The file of a dotted module or package name, relative to the project; None for a
    name that is not a module (``from medpipe import PipelineError``)."""
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / candidate).exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the project modules ``path`` imports, anywhere in the file (lazy
    imports inside functions too), with the packages that hold them."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] in ("medpipe", "stages"):
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {n for n in out if module_file(n) is not None}


def imports_of(file: str) -> set[str]:
    """Files (relative) that ``file`` imports directly."""
    found = {module_file(name) for name in imported_modules(ROOT / file)}
    return {f for f in found if f is not None and f != file}


def imported_files(start: str) -> set[str]:
    """Every project file ``start`` imports, directly or through others."""
    found, todo = set(), [start]
    while todo:
        for path in imports_of(todo.pop()):
            if path not in found:
                found.add(path)
                todo.append(path)
    return found


def docstring_only(path: Path) -> bool:
    """A module holding nothing but its docstring (a package's ``__init__``)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def package_files() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "medpipe").rglob("*.py"))
