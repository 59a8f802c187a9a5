"""The prepared array store: a few files, however many images went in.

Layout of a store directory::

    train_images.npy  uint8 (N, C, H, W), intensities 0..255
    train_labels.npy  int64 (N,)
    val_images.npy, val_labels.npy, test_images.npy, test_labels.npy
    manifest.csv      one row per image: split, index in split, label, class, source id
    stats.json        classes, image size, channels, and the train-split mean/std

Images stay as 8-bit intensities; the model normalises them on the device with the
train-split statistics recorded here (and copied into the model file), so augmentation
that needs the [0, 1] range (gamma, contrast) works on the true intensities.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medpipe import PipelineError

SPLITS = ("train", "val", "test")
STATS = "stats.json"
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, C, H, W); a read-only memory map when loaded
    labels: np.ndarray  # int64 (N,)


def images_path(store: Path, split: str) -> Path:
    return Path(store) / f"{split}_images.npy"


def labels_path(store: Path, split: str) -> Path:
    return Path(store) / f"{split}_labels.npy"


def read_stats(store: Path | str) -> dict:
    path = Path(store) / STATS
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run the prepare stage first") from None


def headline(summary: dict) -> dict[str, int]:
    """What ``metrics/prepare.json`` keeps of a store's summary (``stats.json`` with what
    the prepare stage found; the whole of it goes to the detail file): the number of
    classes, the image size and channels, the images per split, the folds, the image files
    skipped and the duplicate groups found. No class names, so every dataset's file has
    the same keys."""
    out = {"classes": len(summary["classes"]), "image_size": summary["image_size"],
           "channels": summary["channels"],
           **{f"{split}_images": n for split, n in summary["images"].items()}}
    if "folds" in summary:
        out["folds"] = summary["folds"]
    if summary.get("skipped"):
        out["skipped"] = summary["skipped"]["count"]
    if summary.get("duplicates"):
        out["duplicates"] = summary["duplicates"]["count"]
    return out


def load_split(store: Path | str, split: str, mmap: bool = True) -> Split:
    """Load one split; ``mmap`` keeps the images on disk until they are indexed."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    try:
        images = np.load(images_path(store, split), mmap_mode="r" if mmap else None)
        labels = np.load(labels_path(store, split))
    except FileNotFoundError as e:
        raise PipelineError(f"{e.filename}: not found; run the prepare stage first") from None
    if len(images) != len(labels):
        raise PipelineError(
            f"{images_path(store, split)}: {len(images)} images but {len(labels)} labels"
        )
    return Split(images=images, labels=labels)


def gigabytes(nbytes: int) -> str:
    """``nbytes`` as decimal gigabytes: "2,240.0 GB"; below 1 GB, two significant digits
    ("0.50 GB", "0.000018 GB")."""
    gb = nbytes / 1e9
    if gb >= 1 or gb <= 0:
        return f"{gb:,.1f} GB"
    return f"{gb:.{1 - math.floor(math.log10(gb))}f} GB"


def free_disk(path: Path | str) -> int:
    """Bytes free on the disk that holds ``path`` (or, if it does not exist yet, its
    nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def available_memory() -> int | None:
    """Bytes of memory that can be had without swapping (``MemAvailable``, which counts
    reclaimable page cache); None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def require_disk(nbytes: int, where: Path | str, what: str, advice: str) -> None:
    """A one-line PipelineError unless ``nbytes`` fit on the disk of ``where``."""
    free = free_disk(where)
    if nbytes > free:
        raise PipelineError(f"{where}: {what} needs {gigabytes(nbytes)} of disk, but only "
                            f"{gigabytes(free)} is free there; {advice}")


def require_memory(nbytes: int, where: Path | str, what: str, advice: str) -> None:
    """A one-line PipelineError unless ``nbytes`` fit in the memory available now."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise PipelineError(f"{where}: {what} needs {gigabytes(nbytes)} of memory, but only "
                            f"{gigabytes(available)} is available; {advice}")
