"""The data sources by name (``data.source``), and the reader of a raw dataset."""


from __future__ import annotations

import json
import logging
from pathlib import Path
from types import ModuleType

from medpipe import PipelineError
from medpipe.data.raw import META_FILE, RawDataset
from medpipe.data.sources import folder, manifest, medmnist, synthetic
from medpipe.params.loading import validate
from medpipe.params.sections import DataParams
from medpipe.utils.files import atomic_path

log = logging.getLogger(__name__)

SOURCES: dict[str, ModuleType] = {"synthetic": synthetic, "medmnist": medmnist,
                                  "folder": folder, "csv": manifest}


def get(name: str) -> ModuleType:
    """The module of the data source ``name``."""
    if name not in SOURCES:
        raise PipelineError(f"unknown data source '{name}'; valid: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def download(cfg: DataParams, out_dir: Path, stage: str = "download") -> None:
    """Fetch the dataset ``cfg`` describes into ``out_dir`` (replaced only on success): the
    download stage's work, and the external stage's for another site's set."""
    validate(cfg, stage=stage)
    source = get(cfg.source)
    with atomic_path(out_dir) as tmp:
        source.fetch(cfg, tmp)
    log.info("%s dataset written to %s", cfg.source, out_dir)


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
