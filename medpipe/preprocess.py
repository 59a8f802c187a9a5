"""Deterministic preprocessing: split, channel handling, resize, intensity statistics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from medpipe import PipelineError, store
from medpipe.fsutil import atomic_path, write_json
from medpipe.sources import RawDataset

log = logging.getLogger(__name__)

CHUNK = 512  # images converted per step; bounds memory however large the dataset


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train/val/test index arrays (each sorted), reproducible from ``seed``."""
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0):
        raise PipelineError(
            "params.yaml: 'prepare.val_fraction' and 'prepare.test_fraction' must be "
            "between 0 and 1 (stage prepare)"
        )
    if val_fraction + test_fraction >= 1.0:
        raise PipelineError(
            "params.yaml: 'prepare.val_fraction' + 'prepare.test_fraction' must be below 1 "
            "(stage prepare)"
        )
    index = np.arange(len(labels))
    try:
        rest, test = train_test_split(
            index, test_size=test_fraction, stratify=labels, random_state=seed
        )
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1.0 - test_fraction),
            stratify=labels[rest],
            random_state=seed,
        )
    except ValueError as e:  # too few images of a class to stratify
        raise PipelineError(f"cannot split the data by class: {e} (stage prepare)") from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def official_splits(splits: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.flatnonzero(splits == name) for name in store.SPLITS}


def check_split_classes(labels: np.ndarray, parts: dict[str, np.ndarray], classes: list[str]):
    """Every class must appear in every split, or a metric would silently mean less."""
    for name, idx in parts.items():
        if len(idx) == 0:
            raise PipelineError(f"split '{name}' is empty (stage prepare)")
        present = np.bincount(labels[idx], minlength=len(classes))
        for k, count in enumerate(present):
            if count == 0:
                raise PipelineError(
                    f"class '{classes[k]}' has no images in split '{name}'; add images or "
                    f"change the split fractions (stage prepare)"
                )


def to_tensor_batch(images: np.ndarray, channels: int) -> torch.Tensor:
    """uint8/uint16 (B, H, W) or (B, H, W, C) -> float32 (B, channels, H, W) in [0, 1]."""
    arr = np.asarray(images)
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    x = torch.from_numpy(arr.astype(np.float32)) / scale
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4:
        x = x.permute(0, 3, 1, 2)
    else:
        raise PipelineError(f"images must be 2-D (grey) or 3-D (colour), got shape {arr.shape}")
    have = x.shape[1]
    if have == 4:  # RGBA: drop alpha
        x, have = x[:, :3], 3
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:  # ITU-R BT.601 luma
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise PipelineError(f"cannot convert {have}-channel images to {channels} channels")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a float batch to ``size`` x ``size``."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_store_pixels(images: np.ndarray, channels: int, size: int) -> torch.Tensor:
    """Raw images -> what the store holds and the model is trained on: uint8
    ``(B, channels, size, size)``. Prediction calls this too, so that a new image is
    prepared exactly as the training images were."""
    x = resize(to_tensor_batch(images, channels), size)
    return torch.round(x.clamp_(0.0, 1.0) * 255.0).to(torch.uint8)


def prepare(raw: RawDataset, out_dir: Path | str, cfg) -> dict:
    """Split, convert and resize ``raw`` into the array store at ``out_dir``.

    Returns the summary written to the prepare metrics (counts, image size, stats).
    The store appears at ``out_dir`` only when complete.
    """
    labels = np.asarray(raw.labels, dtype=np.int64)
    classes = list(raw.classes)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes):
        raise PipelineError(f"labels must lie in 0..{len(classes) - 1} (stage prepare)")
    if cfg.image_size < 8:
        raise PipelineError("params.yaml: 'prepare.image_size' must be at least 8 (stage prepare)")
    for k, count in enumerate(np.bincount(labels, minlength=len(classes))):
        if count == 0:
            raise PipelineError(f"class '{classes[k]}' has no images (stage prepare)")
    if raw.splits is not None:
        parts = official_splits(np.asarray(raw.splits))
    else:
        parts = split_indices(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    check_split_classes(labels, parts, classes)

    c, s = cfg.channels, cfg.image_size
    rows = []
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, idx in parts.items():
            out = np.lib.format.open_memmap(
                store.images_path(tmp, name), mode="w+", dtype=np.uint8, shape=(len(idx), c, s, s)
            )
            for start in range(0, len(idx), CHUNK):
                batch = idx[start : start + CHUNK]
                q = to_store_pixels(raw.images[batch], c, s)
                out[start : start + len(batch)] = q.numpy()
                if name == "train":
                    f = q.to(torch.float64) / 255.0
                    total += f.sum(dim=(0, 2, 3)).numpy()
                    total_sq += (f * f).sum(dim=(0, 2, 3)).numpy()
            out.flush()
            del out
            np.save(store.labels_path(tmp, name), labels[idx])
            rows += [
                {"split": name, "index": i, "label": int(labels[j]), "class": classes[labels[j]],
                 "source_id": raw.ids[j]}
                for i, j in enumerate(idx)
            ]
        n_pix = len(parts["train"]) * s * s
        mean = total / n_pix
        std = np.sqrt(np.maximum(total_sq / n_pix - mean**2, 0.0))
        if np.any(std < 1e-6):
            raise PipelineError(
                "train images have constant intensity; nothing to learn (stage prepare)"
            )
        stats = {
            "classes": classes,
            "image_size": s,
            "channels": c,
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(v), 6) for v in std],
            "counts": {
                name: {classes[k]: int(n) for k, n in
                       enumerate(np.bincount(labels[idx], minlength=len(classes)))}
                for name, idx in parts.items()
            },
        }
        pd.DataFrame(rows).to_csv(tmp / store.MANIFEST, index=False)
        write_json(tmp / store.STATS, stats)
    log.info("prepared %s images into %s", sum(len(i) for i in parts.values()), out_dir)
    return stats
