"""An external test set as a store the unchanged model can be scored on.

Every image of the external dataset goes to the ``test`` split, prepared as the training
store's images were (its image size and channels; the model normalises with the training
statistics itself), its labels in the training store's class order. The training store's
validation split is copied in as ``val``, so that a threshold rule (Youden, a target
sensitivity) picks the same threshold it picks for the internal test split: the model
and its operating point are both unchanged.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe import PipelineError
from medpipe.data import store
from medpipe.data.convert import convert_files
from medpipe.data.prepare import convert_arrays
from medpipe.data.raw import RawDataset
from medpipe.data.sources.pack import PackedImages
from medpipe.utils.files import atomic_path, write_json

log = logging.getLogger(__name__)


def relabel(raw: RawDataset, classes: list[str], name: str) -> np.ndarray:
    """``raw``'s labels in the order of the model's ``classes``; a class the model does
    not know is an error naming it."""
    unknown = [c for c in raw.classes if c not in classes]
    if unknown:
        raise PipelineError(f"params.yaml: 'external.{name}' has class '{unknown[0]}', which "
                            f"the model does not know (its classes: {', '.join(classes)}) "
                            "(stage external)")
    order = np.array([classes.index(c) for c in raw.classes])
    labels = np.asarray(raw.labels)
    if labels.ndim == 2:  # multi-hot: column k of ours is the raw column of classes[k]
        out = np.zeros((len(labels), len(classes)), dtype=np.uint8)
        out[:, order] = labels
        return out
    return order[labels.astype(np.int64)]


def build(raw: RawDataset, training_store: Path, out_dir: Path, name: str, *,
          on_error: str = "fail", workers: int = 0, frame: str | int = "middle") -> dict:
    """Write the external store at ``out_dir``; return its summary (counts, skipped)."""
    stats = store.read_stats(training_store)
    labels = relabel(raw, stats["classes"], name)
    c, s = stats["channels"], stats["image_size"]
    index = np.arange(len(labels))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        skipped: list = []
        if isinstance(raw.images, PackedImages):
            done = convert_files(raw.images.path, raw.images.files, {"test": index}, tmp, c, s,
                                 on_error, workers, frame)
            index, skipped = index[done.kept["test"]], done.skipped
        else:
            convert_arrays(raw.images, {"test": index}, tmp, c, s)
        np.save(store.labels_path(tmp, "test"), labels[index])
        for suffix in ("images", "labels"):  # the training store's val split, unchanged
            src = training_store / f"val_{suffix}.npy"
            shutil.copyfile(src, tmp / src.name)
        manifest = pd.read_csv(training_store / store.MANIFEST)
        test = pd.DataFrame({"split": "test", "index": np.arange(len(index)),
                             "source_id": [raw.ids[j] for j in index]})
        if raw.attributes is not None and not raw.attributes.empty:  # for evaluate.groups
            test = pd.concat([test, raw.attributes.iloc[index].reset_index(drop=True)], axis=1)
        pd.concat([manifest[manifest["split"] == "val"], test]).to_csv(
            tmp / store.MANIFEST, index=False)
        counts = (labels[index].sum(axis=0) if labels.ndim == 2
                  else np.bincount(labels[index], minlength=len(stats["classes"])))
        ext_stats = {**stats, "images": {"val": stats["images"]["val"], "test": len(index)},
                     "counts": {"val": stats["counts"]["val"],
                                "test": dict(zip(stats["classes"], map(int, counts),
                                                 strict=True))},
                     "external": name}
        ext_stats.pop("folds", None)
        write_json(tmp / store.STATS, ext_stats)
    log.info("external set %s: %d images -> %s", name, len(index), out_dir)
    return {**ext_stats, "skipped": {"count": len(skipped), "files": skipped}}
