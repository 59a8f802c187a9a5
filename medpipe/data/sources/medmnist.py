"""MedMNIST v3 (2D subsets): download one ``.npz`` file, verify it, keep the official splits.

``data.name`` picks the subset and ``data.resolution`` its side in px (28, 64, 128 or 224).
The file comes from the MedMNIST Zenodo record, or from ``data.url`` (a mirror or an
air-gapped copy, ``http(s)://`` or ``file://``); it is checked against ``data.md5``, or the
official MD5 when that is null. The subsets' facts (file checksums, class names, tasks,
channels, split sizes) are in :mod:`medpipe.data.sources.medmnist_subsets`.
"""

from __future__ import annotations

import difflib
import json
import zipfile
from pathlib import Path

import numpy as np

from medpipe import PipelineError
from medpipe.data.raw import order_classes
from medpipe.data.sources.medmnist_subsets import SUBSETS, Subset
from medpipe.utils import downloads

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
ZENODO = "https://zenodo.org/records/10519652/files/{file}?download=1"
STAGE = "(stage download)"

# Ordinal grades are learned as classes, as the MedMNIST benchmarks do. ChestMNIST's 14
# findings per image become multi-hot labels (the store's multi-label form).
SUPPORTED_TASKS = ("binary-class", "multi-class", "ordinal-regression",
                   "multi-label, binary-class")
MULTILABEL = "multi-label, binary-class"


def file_name(name: str, size: int) -> str:
    """The official file name: ``<name>.npz`` at 28 px, ``<name>_<size>.npz`` otherwise."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def official_url(name: str, size: int) -> str:
    return ZENODO.format(file=file_name(name, size))


def subset(name: str | None) -> Subset:
    """The subset called ``name``; unknown names list the valid ones."""
    valid = ", ".join(SUBSETS)
    if name is None:
        raise PipelineError(
            f"params.yaml: 'data.name' must name a MedMNIST subset for source medmnist; "
            f"valid: {valid} {STAGE}"
        )
    if name not in SUBSETS:
        close = difflib.get_close_matches(name, list(SUBSETS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PipelineError(
            f"params.yaml: unknown MedMNIST subset 'data.name: {name}'{hint}; valid: {valid} "
            f"{STAGE}"
        )
    info = SUBSETS[name]
    if info.task not in SUPPORTED_TASKS:
        raise PipelineError(
            f"params.yaml: 'data.name: {name}' is a {info.task} task, not supported yet "
            f"(one label per image only) {STAGE}"
        )
    return info


def resolve(cfg) -> tuple[Subset, str, str]:
    """Check the ``data`` params for this source; return (subset, url, md5)."""
    info = subset(cfg.name)
    if cfg.patient_pattern is not None:
        raise PipelineError(f"params.yaml: 'data.patient_pattern' is not read by source "
                            f"medmnist (it has no patient ids); set it to null {STAGE}")
    if cfg.class_folders:
        raise PipelineError(f"params.yaml: 'data.class_folders' is not read by source "
                            f"medmnist (it has no class folders); set it to null {STAGE}")
    if cfg.resolution not in SIZES:
        raise PipelineError(
            f"params.yaml: 'data.resolution' must be one of {', '.join(map(str, SIZES))} for "
            f"MedMNIST, got {cfg.resolution} {STAGE}"
        )
    url = cfg.url if cfg.url is not None else official_url(cfg.name, cfg.resolution)
    if cfg.url is not None:
        downloads.check_url(cfg.url, what="params.yaml: 'data.url'")
    if cfg.md5 is not None:
        md5 = cfg.md5.lower()
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
            raise PipelineError(
                f"params.yaml: 'data.md5' must be 32 hex digits, got '{cfg.md5}' {STAGE}"
            )
    elif cfg.resolution in info.md5:
        md5 = info.md5[cfg.resolution]
    else:  # no official checksum known: refuse rather than use an unverified file
        raise PipelineError(
            f"params.yaml: no official MD5 is known for {file_name(cfg.name, cfg.resolution)}; "
            f"set 'data.md5' {STAGE}"
        )
    return info, url, md5


def fetch(cfg, out_dir: Path) -> None:
    """Download and verify the subset's file into ``out_dir``; write ``dataset.json``."""
    info, url, md5 = resolve(cfg)
    classes = order_classes(list(info.classes), cfg.classes, "download")
    name = file_name(cfg.name, cfg.resolution)
    out_dir.mkdir(parents=True)
    try:
        path = downloads.fetch(url, out_dir / name, md5=md5, sha256=cfg.sha256)
    except PipelineError as e:
        hint = ""
        if cfg.url is None and "cannot connect" in str(e):
            hint = "; offline? set 'data.url' to a mirror or a file:// copy"
        raise PipelineError(f"{e}{hint} {STAGE}") from None
    arrays = _load(path, url)
    _check(arrays, info, cfg.resolution, url)
    # No URL in the metadata: the same bytes from a mirror are the same dataset, so a
    # change of data.url alone leaves data/raw identical and nothing downstream reruns.
    meta = {
        "source": "medmnist",
        "name": cfg.name,
        "resolution": cfg.resolution,
        "file": name,
        "md5": md5,
        "task": info.task,
        "license": info.license,
        "classes": classes,
        "counts": {s: int(len(arrays[f"{s}_labels"])) for s in SPLITS},
        "image_shape": list(arrays["train_images"].shape[1:]),
    }
    if classes != list(info.classes):  # data.classes reorders the file's labels on reading
        meta["official_classes"] = list(info.classes)
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read(raw_dir: Path, meta: dict):
    """The three official splits, concatenated, with ``splits`` naming each image's."""
    from medpipe.data.raw import RawDataset

    path = raw_dir / meta["file"]
    multilabel = meta["task"] == MULTILABEL
    with np.load(path, allow_pickle=False) as f:
        labels = [f[f"{s}_labels"] if multilabel else f[f"{s}_labels"].reshape(-1)
                  for s in SPLITS]
    lengths = [len(x) for x in labels]
    images = SplitImages(path, lengths, tuple(meta["image_shape"]))
    splits = np.concatenate([np.full(n, s) for s, n in zip(SPLITS, lengths, strict=True)])
    ids = [f"{meta['name']}-{s}-{i:06d}" for s, n in zip(SPLITS, lengths, strict=True)
           for i in range(n)]
    classes = list(meta["classes"])
    official = meta.get("official_classes", classes)
    new_label = np.array([classes.index(c) for c in official])  # official label -> ours
    merged = np.concatenate(labels)
    # multi-label: our column k is the file's column of classes[k]
    merged = (merged[:, np.argsort(new_label)] if multilabel
              else new_label[merged.astype(np.int64)])
    return RawDataset(classes=classes, images=images,
                      labels=merged.astype(np.uint8 if multilabel else np.int64),
                      ids=ids, splits=splits, channels=SUBSETS[meta["name"]].channels)


class SplitImages:
    """The images of the three splits as one array indexable by integers, slices, integer
    or boolean arrays, holding one split in memory at a time.

    A ``.npz`` is compressed, so it cannot be memory-mapped; concatenating its splits
    would need twice the file's size in memory. The prepare stage walks the splits in
    order, so this way its peak is the largest split.
    """

    def __init__(self, path: Path, lengths: list[int], image_shape: tuple[int, ...]):
        self.path = path
        self.starts = np.cumsum([0, *lengths])
        self.shape = (int(self.starts[-1]), *image_shape)
        self.dtype = np.dtype(np.uint8)  # checked by fetch
        self._loaded: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        idx = np.arange(len(self))[index]
        scalar = idx.ndim == 0
        idx = np.atleast_1d(idx)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        for k in np.unique(which):
            sel = which == k
            out[sel] = self._split(int(k))[idx[sel] - self.starts[k]]
        return out[0] if scalar else out

    def _split(self, k: int) -> np.ndarray:
        if self._loaded is None or self._loaded[0] != k:
            self._loaded = None  # let the previous split go before loading the next
            with np.load(self.path, allow_pickle=False) as f:
                self._loaded = (k, f[f"{SPLITS[k]}_images"])
        return self._loaded[1]


def _load(path: Path, where: str) -> dict[str, np.ndarray]:
    keys = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{where}: not a .npz file")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise PipelineError(f"{where}: not a MedMNIST file: no array '{missing[0]}'")
            return {k: f[k] for k in keys}
    except (OSError, ValueError) as e:
        raise PipelineError(f"{where}: not a readable .npz file ({e})") from None


def _check(arrays: dict[str, np.ndarray], info: Subset, size: int, where: str) -> None:
    """A file of the wrong subset or size (a mirror mix-up) fails here, not in training."""
    shape = (size, size) if info.channels == 1 else (size, size, 3)
    for s in SPLITS:
        images, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if images.shape[1:] != shape or images.dtype != np.uint8:
            raise PipelineError(
                f"{where}: '{s}_images' has shape {images.shape[1:]} {images.dtype}, "
                f"expected {shape} uint8 for this subset at {size} px"
            )
        width = len(info.classes) if info.task == MULTILABEL else 1
        if labels.shape != (len(images), width):
            raise PipelineError(
                f"{where}: '{s}_labels' has shape {labels.shape}, expected "
                f"({len(images)}, {width})"
            )
        if info.task == MULTILABEL:
            if len(labels) and (labels.min() < 0 or labels.max() > 1):
                raise PipelineError(f"{where}: '{s}_labels' has values other than 0 and 1")
        elif len(labels) and (labels.min() < 0 or labels.max() >= len(info.classes)):
            raise PipelineError(
                f"{where}: '{s}_labels' has labels outside 0..{len(info.classes) - 1}"
            )
