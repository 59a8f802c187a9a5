"""Deterministic preprocessing: split, channel handling, resize, intensity statistics.

Arrays (synthetic, MedMNIST) are converted here in batches; image files (folder, csv)
by :mod:`medpipe.data.convert` in worker processes. Splits come from :mod:`medpipe.data.splitting`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medpipe import PipelineError
from medpipe import task as tasks
from medpipe.data import duplicates, folds, store
from medpipe.data.channels import resolve as resolve_channels
from medpipe.data.convert import convert_files
from medpipe.data.pixels import to_store_pixels
from medpipe.data.raw import RawDataset
from medpipe.data.sources.pack import PackedImages
from medpipe.data.splitting import check_split_classes, official_splits, split_indices
from medpipe.params.loading import validate
from medpipe.utils.files import atomic_path, write_json
from medpipe.utils.progress import track

log = logging.getLogger(__name__)

CHUNK = 512  # images converted per step; bounds memory however large the dataset
CHUNK_BYTES = 1 << 30  # and at most ~1 GiB of float32 resized pixels per step, for large sizes


def store_bytes(parts: dict[str, np.ndarray], channels: int, size: int) -> int:
    """Bytes of the store's image arrays (uint8, one byte per pixel and channel)."""
    return sum(len(idx) for idx in parts.values()) * channels * size * size


def prepare(raw: RawDataset, out_dir: Path | str, cfg, *, find_duplicates: bool = True,
            only: tuple[str, ...] | None = None) -> dict:
    """Split, convert and resize ``raw`` into the array store at ``out_dir``.

    Returns the summary for the prepare metrics: the store's ``stats.json`` (task,
    classes, counts, image size, statistics) plus the positive class, the patients the
    split was grouped by and where their ids came from, the unreadable files
    skipped under ``on_error: skip`` and the duplicate images found (see
    :mod:`medpipe.data.duplicates`; ``find_duplicates=False`` skips the search, for
    benchmarks of its cost). ``only``: the splits to store (the same split, the other
    splits' images never decoded), as the plan stage prepares its trials' images; such a
    store has no folds. The store appears at ``out_dir`` only when complete.
    """
    validate(cfg, stage="prepare")
    multilabel = raw.multilabel
    labels = np.asarray(raw.labels, dtype=np.uint8 if multilabel else np.int64)
    classes = list(raw.classes)
    _check_labels(labels, classes, multilabel)
    parts = _split(raw, labels, classes, cfg)
    if only is not None:
        parts = {name: idx for name, idx in parts.items() if name in only}

    c, s = resolve_channels(raw, cfg.channels), cfg.image_size
    n_images = sum(len(idx) for idx in parts.values())
    # Checked before the arrays are created: they are written in place through memory
    # maps, so a store too large for its disk would fail only when the disk fills up.
    store.require_disk(store_bytes(parts, c, s), Path(out_dir),
                       f"the store ({n_images:,} images of {c} x {s} x {s} px)",
                       "lower 'prepare.image_size' or free disk space (stage prepare)")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        if isinstance(raw.images, PackedImages):
            done = convert_files(raw.images.path, raw.images.files, parts, tmp, c, s,
                                 cfg.on_error, cfg.workers, cfg.dicom_frame)
            parts = {name: idx[done.kept[name]] for name, idx in parts.items()}
            if done.skipped:  # a class may have lost its last image in a split
                check_split_classes(labels, parts, classes)
            sums, squares, skipped = done.sums["train"], done.squares["train"], done.skipped
        else:
            sums, squares = convert_arrays(raw.images, parts, tmp, c, s)
            skipped = []
        found = None
        if find_duplicates:  # may drop copies: before the labels and statistics are written
            screened = duplicates.screen(tmp, parts, labels, classes, raw.ids, cfg.duplicates,
                                         sums, squares)
            parts, sums, squares, found = (screened.parts, screened.sums, screened.squares,
                                           screened.report)
        rows = _write_labels(tmp, parts, labels, classes, raw.ids)
        stats = _stats(parts, labels, classes, s, c, _mean_std(sums, squares,
                                                             len(parts["train"]) * s * s))
        if cfg.folds >= 2 and only is None:
            stats["folds"] = _write_folds(tmp, raw, labels, parts, classes, cfg)
        _with_attributes(pd.DataFrame(rows), raw, parts).to_csv(tmp / store.MANIFEST,
                                                                 index=False)
        write_json(tmp / store.STATS, stats)
    log.info("prepared %s images into %s", sum(len(i) for i in parts.values()), out_dir)
    return {**stats, "positive_class": tasks.from_meta(stats).positive_class,
            "patients": _patients(raw, parts),
            "skipped": {"count": len(skipped), "files": skipped}, "duplicates": found}


def _write_labels(out_dir: Path, parts: dict[str, np.ndarray], labels: np.ndarray,
                  classes: list[str], ids: list[str]) -> list[dict]:
    """Write each split's labels; return the manifest's rows."""
    rows = []
    for name, idx in parts.items():
        np.save(store.labels_path(out_dir, name), labels[idx])
        rows += [{"split": name, "index": i, **_label_columns(labels[j], classes),
                  "source_id": ids[j]} for i, j in enumerate(idx)]
    return rows


def _stats(parts: dict[str, np.ndarray], labels: np.ndarray, classes: list[str], size: int,
           channels: int, mean_std: tuple[np.ndarray, np.ndarray]) -> dict:
    """The store's ``stats.json``: what train, evaluate and predict read."""
    mean, std = mean_std
    return {
        "task": "multilabel" if labels.ndim == 2 else "multiclass",
        "classes": classes,
        "image_size": size,
        "channels": channels,
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "images": {name: int(len(idx)) for name, idx in parts.items()},
        "counts": {name: _counts(labels[idx], classes) for name, idx in parts.items()},
    }


def _split(raw: RawDataset, labels: np.ndarray, classes: list[str], cfg
           ) -> dict[str, np.ndarray]:
    """Train/val/test indices: the source's own split if it has one, else stratified (and
    grouped by patient where patients are known); every class in every split."""
    groups = None if raw.groups is None else np.asarray(raw.groups)
    if raw.splits is not None:
        parts = official_splits(np.asarray(raw.splits), labels, cfg.val_fraction, cfg.seed,
                                groups, classes)
    else:
        parts = split_indices(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed, groups,
                              classes)
    check_split_classes(labels, parts, classes)
    return parts


def _patients(raw: RawDataset, parts: dict[str, np.ndarray]) -> dict:
    """The patients of the images stored, and where their ids came from (null: none
    known, the split is by image)."""
    if raw.groups is None:
        return {"count": None, "from": None}
    kept = np.concatenate(list(parts.values()))
    return {"count": len(np.unique(np.asarray(raw.groups)[kept])),
            "from": raw.patients_from or "source"}


def _mean_std(sums: list[int], squares: list[int], n_pix: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (intensities 0..1) from the train split's
    integer pixel sums and sums of squares over ``n_pix`` pixels per channel."""
    mean = np.array(sums, dtype=np.float64) / (255.0 * n_pix)
    mean_sq = np.array(squares, dtype=np.float64) / (255.0**2 * n_pix)
    std = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    if np.any(std < 1e-6):
        raise PipelineError("train images have constant intensity; nothing to learn "
                            "(stage prepare)")
    return mean, std


def _check_labels(labels: np.ndarray, classes: list[str], multilabel: bool) -> None:
    if multilabel:
        if labels.shape[1] != len(classes) or labels.max(initial=0) > 1:
            raise PipelineError(f"multi-label labels must be 0/1 with {len(classes)} columns "
                                f"(stage prepare)")
        present = labels.sum(axis=0)
    else:
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes):
            raise PipelineError(f"labels must lie in 0..{len(classes) - 1} (stage prepare)")
        present = np.bincount(labels, minlength=len(classes))
    for k, count in enumerate(present):
        if count == 0:
            raise PipelineError(f"class '{classes[k]}' has no images (stage prepare)")


def _counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Images per class; for multi-label, images with each finding."""
    n = labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels, minlength=len(classes))
    return {name: int(v) for name, v in zip(classes, n, strict=True)}


def _write_folds(out_dir: Path, raw: RawDataset, labels: np.ndarray,
                 parts: dict[str, np.ndarray], classes: list[str], cfg) -> int:
    """The cross-validation folds of the pool (train, then val); returns their number."""
    pool = np.concatenate([parts["train"], parts["val"]])
    groups = None if raw.groups is None else np.asarray(raw.groups)[pool]
    np.save(out_dir / folds.FOLDS_FILE,
            folds.assign(labels[pool], groups, cfg.folds, cfg.seed, classes))
    return cfg.folds


def _with_attributes(manifest: pd.DataFrame, raw: RawDataset, parts: dict[str, np.ndarray]
                     ) -> pd.DataFrame:
    """The store's manifest with the source's own columns per image (a CSV manifest's
    sex, site, ...), which the evaluate stage can score subgroups by."""
    if raw.attributes is None or raw.attributes.empty:
        return manifest
    order = np.concatenate([idx for idx in parts.values()])
    attributes = raw.attributes.iloc[order].reset_index(drop=True)
    return pd.concat([manifest, attributes], axis=1)


def _label_columns(label: np.ndarray, classes: list[str]) -> dict[str, object]:
    """The manifest's label and class: for multi-label, indices and names joined by '|'."""
    if np.ndim(label) == 0:
        return {"label": int(label), "class": classes[int(label)]}
    on = np.flatnonzero(label)
    return {"label": "|".join(map(str, on)), "class": "|".join(classes[k] for k in on)}


def chunk_rows(channels: int, size: int) -> int:
    """Images converted per step: ``CHUNK``, fewer for large images, so that a step's
    float32 pixels stay within ``CHUNK_BYTES``."""
    return max(1, min(CHUNK, CHUNK_BYTES // (channels * size * size * 4)))


def convert_arrays(images, parts: dict[str, np.ndarray], out_dir: Path, c: int, s: int
                    ) -> tuple[list[int], list[int]]:
    """Arrays (synthetic, MedMNIST): convert in batches; return the train split's integer
    pixel sums and sums of squares per channel."""
    sums, squares = [0] * c, [0] * c
    rows = chunk_rows(c, s)
    for name, idx in parts.items():
        out = np.lib.format.open_memmap(
            store.images_path(out_dir, name), mode="w+", dtype=np.uint8,
            shape=(len(idx), c, s, s))
        for start in track(range(0, len(idx), rows), f"prepare: {name} images", unit="chunk"):
            batch = idx[start : start + rows]
            q = to_store_pixels(images[batch], c, s)
            out[start : start + len(batch)] = q.numpy()
            if name == "train":
                qi = q.to(torch.int64)
                sums = [a + int(b) for a, b in zip(sums, qi.sum(dim=(0, 2, 3)), strict=True)]
                squares = [a + int(b) for a, b in
                           zip(squares, (qi * qi).sum(dim=(0, 2, 3)), strict=True)]
        out.flush()
        del out
    return sums, squares
