"""The fingerprint of the data: what the plan needs to know before the store is made.

Images of the training and validation splits, per class (or finding), the task (binary,
multi-class, multi-label), channels, the side params.yaml asks for and the native side
of the source images, and the train split's intensity statistics. The native side is
read from the raw dataset; the rest from the plan's own store of the train and val
splits (``stats.json`` and the label arrays: the plan never reads the test split).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medpipe import PipelineError
from medpipe import task as tasks
from medpipe.data import store
from medpipe.data.raw import RawDataset

log = logging.getLogger(__name__)

PLAN_SPLITS = ("train", "val")  # the test split is left for the evaluation alone
NATIVE_SAMPLE = 16  # image files decoded to find the native side (they may differ)


@dataclass(frozen=True)
class Fingerprint:
    task: str  # "binary", "multiclass" (3+ classes) or "multilabel"
    classes: list[str]
    channels: int
    image_size: int  # the side params.yaml asks for (prepare.image_size), px
    native_size: int  # median side of the source images, px
    images: dict[str, int]  # per split: train and val (the plan never reads test)
    train_counts: dict[str, int]  # train images per class (multi-label: positives)
    val_counts: dict[str, int]
    mean: list[float]
    std: list[float]
    # params.yaml sets prepare.image_size (not its default): the prepare stage keeps that
    # side over the plan's, so the plan searches that side only
    side_set: bool = False

    @property
    def n_train(self) -> int:
        return self.images["train"]

    @property
    def balance_ratio(self) -> float:
        """Smallest over largest class count (multi-label: smallest prevalence, of 1/2)."""
        counts = list(self.train_counts.values())
        if self.task == "multilabel":
            return min(min(counts) / max(self.n_train, 1) / 0.5, 1.0)
        return min(counts) / max(max(counts), 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "balance_ratio": round(self.balance_ratio, 4)}


def read(data_dir: Path, native: int | None = None, image_size: int | None = None,
         side_set: bool = False) -> Fingerprint:
    """The fingerprint of the store at ``data_dir`` (its train and val splits);
    ``native``: the source images' side (:func:`native_size`) and ``image_size`` the side
    params.yaml asks for (for both, the store's side stands in); ``side_set``: whether
    params.yaml sets that side rather than leaving it at its default."""
    stats = store.read_stats(data_dir)
    labels = {split: np.load(store.labels_path(data_dir, split)) for split in PLAN_SPLITS}
    classes = list(stats["classes"])
    posed = tasks.from_meta(stats, str(data_dir))  # the task as the store decided it
    multilabel = posed.name == tasks.MultiLabel.name
    task = "binary" if posed.positive_class is not None else posed.name
    return Fingerprint(
        task=task, classes=classes, channels=int(stats["channels"]),
        image_size=int(image_size or stats["image_size"]),
        native_size=int(native or stats["image_size"]),
        images={split: int(len(y)) for split, y in labels.items()},
        train_counts=_counts(labels["train"], classes, multilabel),
        val_counts=_counts(labels["val"], classes, multilabel),
        mean=[float(v) for v in stats["mean"]], std=[float(v) for v in stats["std"]],
        side_set=side_set)


def _counts(labels: np.ndarray, classes: list[str], multilabel: bool) -> dict[str, int]:
    if multilabel:
        per = np.asarray(labels).reshape(len(labels), len(classes)).sum(0)
    else:
        per = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, per, strict=True)}


def native_size(raw: RawDataset, where: Path | str) -> int:
    """The median side (the longer of height and width) of the raw images: all of an
    array source, or the first ``NATIVE_SAMPLE`` files of a file source."""
    images = raw.images
    if hasattr(images, "shape"):  # an array (or memory map): one size for all
        return int(max(images.shape[1:3]))
    sides = [max(images.decode(i).shape[:2]) for i in range(min(len(images), NATIVE_SAMPLE))]
    if not sides:
        raise PipelineError(f"{where}: no images")
    return int(np.median(sides))
