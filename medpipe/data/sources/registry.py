"""The data sources by name (``data.source``), and the reader of a raw dataset."""


from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from medpipe import PipelineError
from medpipe.data.raw import META_FILE, RawDataset
from medpipe.data.sources import folder, manifest, medmnist, synthetic

SOURCES: dict[str, ModuleType] = {"synthetic": synthetic, "medmnist": medmnist,
                                  "folder": folder, "csv": manifest}


def get(name: str) -> ModuleType:
    """The module of the data source ``name``."""
    if name not in SOURCES:
        raise PipelineError(f"unknown data source '{name}'; valid: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def read(raw_dir: Path | str) -> RawDataset:
    """Read the raw dataset that the download stage wrote into ``raw_dir``."""
    raw_dir = Path(raw_dir)
    meta_path = raw_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{meta_path}: not found; run the download stage first") from None
    except json.JSONDecodeError as e:
        raise PipelineError(f"{meta_path}: not valid JSON ({e})") from None
    return get(meta.get("source", "?")).read(raw_dir, meta)
