"""Atomic writes: a stage killed mid-run never leaves a half-written output behind.

Files and directories are written under a temporary sibling name and renamed into place
only when complete, so an output either exists whole or not at all.

A stage's metrics are two files (:func:`write_metrics`): ``<name>.json``, the few numbers
that ``dvc metrics diff`` and ``dvc exp show`` compare, and ``<name>_detail.json`` beside
it (:func:`detail_path`), the whole record: per class, every interval, timings, hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def clean_stale(target: Path) -> None:
    """Remove temporaries a killed earlier run left next to ``target``."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f"{TMP_PREFIX}{target.name}.*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` to; rename it into place on success.

    Works for a file or a directory. On an exception the temporary is removed and the
    existing ``target`` (if any) is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent))
    os.rmdir(tmp)  # the caller decides whether it is a file or a directory
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as stable, human-readable JSON, atomically. NaN becomes null."""
    text = json.dumps(_nan_to_none(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_text(path, text)


DETAIL_SUFFIX = "_detail"


def detail_path(metrics_path: Path | str) -> Path:
    """The detail file beside a metrics file: ``metrics/evaluate.json`` ->
    ``metrics/evaluate_detail.json``."""
    path = Path(metrics_path)
    return path.with_name(f"{path.stem}{DETAIL_SUFFIX}{path.suffix}")


def write_metrics(path: Path | str, headline: dict[str, float], detail: dict) -> None:
    """Write ``detail`` to :func:`detail_path` of ``path``, then ``headline`` to ``path``
    (last: its presence means both are complete). The headline holds numbers only, so that
    every row ``dvc metrics diff`` prints is a comparison; an undefined one (None, NaN) is
    left out (the detail file has it as null). Anything else is a bug of the caller."""
    numbers = {}
    for key, value in headline.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{path}: headline metric {key!r} must be a number, got {value!r}")
        if math.isfinite(value):
            numbers[key] = value
    write_json(detail_path(path), detail)
    write_json(path, numbers)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
