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
