"""Data sources: each one fetches a dataset into a raw directory and reads it back.

A source is a module in this package with two functions:

- ``fetch(cfg: DataParams, out_dir: Path) -> None`` writes the raw dataset into
  ``out_dir`` (a fresh, empty directory), including ``dataset.json`` describing it;
- ``read(raw_dir: Path, meta: dict) -> RawDataset`` loads it for the prepare stage.

Adding a source means adding one module and one line to ``SOURCES``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from medpipe import PipelineError
from medpipe.sources import folder, manifest, medmnist, synthetic

SOURCES: dict[str, ModuleType] = {"synthetic": synthetic, "medmnist": medmnist,
                                  "folder": folder, "csv": manifest}

META_FILE = "dataset.json"


@dataclass
class RawDataset:
    """What a source hands to the prepare stage.

    ``images`` is ``(N, H, W)`` or ``(N, H, W, C)``, uint8 or uint16 (anything indexable
    by an integer array, e.g. a memory map), or, for the file-based sources, a
    :class:`~medpipe.sources.pack.PackedImages` that decodes one file at a time.
    ``labels`` is int64 ``(N,)`` (one class per image) or uint8 ``(N, K)`` multi-hot
    (multi-label: any number of the K ``classes`` per image, a row of zeros for none).
    ``splits`` holds official split names ("train"/"val"/"test") where the source
    defines them (val may be absent: prepare then carves it out of train); ``groups``
    holds patient ids where they are known. ``ids`` names each image in the manifest.
    """

    classes: list[str]
    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    splits: np.ndarray | None = None
    groups: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return np.asarray(self.labels).ndim == 2


def get(name: str) -> ModuleType:
    try:
        return SOURCES[name]
    except KeyError:
        raise PipelineError(
            f"unknown data source '{name}'; valid: {', '.join(sorted(SOURCES))}"
        ) from None


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
