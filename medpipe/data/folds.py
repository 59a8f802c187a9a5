"""K-fold cross-validation folds over the store's pool: the train and val images together
(the test split stays out of every fold), stratified by class and grouped by patient.

With ``prepare.folds: K`` (K >= 2) prepare writes ``folds.npy``: one fold number per pool
image, train images first, then val, in store order. Fold k's model trains on the pool
outside fold k and is validated on fold k (:func:`load_fold`), so every pool image is
scored once by a model that never saw it (the out-of-fold predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medpipe import PipelineError
from medpipe.data import store
from medpipe.data.splitting import stratification_keys

FOLDS_FILE = "folds.npy"


def assign(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int,
           classes: list[str]) -> np.ndarray:
    """The fold (0..k-1) of each pool image: stratified by class (for multi-label data by
    the rarest finding), and with ``groups`` never splitting a patient."""
    labels = np.asarray(labels)
    keys = stratification_keys(labels)
    counts = np.bincount(keys)
    short = np.flatnonzero((counts > 0) & (counts < k))
    if len(short):
        key = int(short[0])
        name = classes[key] if key < len(classes) else "no finding"
        raise PipelineError(f"params.yaml: 'prepare.folds' {k} is more than class '{name}' "
                            f"allows: it has {counts[key]} images outside the test split, one "
                            f"per fold is needed; use at most {int(counts[key])} folds "
                            "(stage prepare)")
    fold = np.empty(len(keys), dtype=np.int8)
    if groups is None:
        parts = StratifiedKFold(k, shuffle=True, random_state=seed).split(keys, keys)
    else:
        n_groups = len(np.unique(groups))
        if n_groups < k:
            raise PipelineError(f"params.yaml: 'prepare.folds' {k} is more than the {n_groups} "
                                "patients outside the test split allow (stage prepare)")
        parts = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(keys, keys,
                                                                               groups)
    for f, (_, held) in enumerate(parts):
        fold[held] = f
    _check_classes(labels, fold, k, classes)
    return fold


def _check_classes(labels: np.ndarray, fold: np.ndarray, k: int, classes: list[str]) -> None:
    """Every class in every fold: a fold's model is validated on it."""
    for f in range(k):
        present = (labels[fold == f].sum(axis=0) > 0 if labels.ndim == 2
                   else np.bincount(labels[fold == f], minlength=len(classes)) > 0)
        if not present.all():
            name = classes[int(np.flatnonzero(~present)[0])]
            raise PipelineError(f"params.yaml: 'prepare.folds' {k}: fold {f} has no image of "
                                f"class '{name}' (its patients fall elsewhere); use fewer "
                                "folds (stage prepare)")


def count(data_dir: Path | str) -> int:
    """The store's number of folds; 0 without cross-validation."""
    return int(store.read_stats(data_dir).get("folds", 0))


def load_fold(data_dir: Path | str, k: int) -> tuple[store.Split, store.Split]:
    """Fold ``k``'s (train, val): the pool outside fold k, and fold k."""
    data_dir = Path(data_dir)
    try:
        fold = np.load(data_dir / FOLDS_FILE)
    except FileNotFoundError:
        raise PipelineError(f"{data_dir / FOLDS_FILE}: not found; set 'prepare.folds' to 2 "
                            "or more and run the prepare stage") from None
    parts = [store.load_split(data_dir, name) for name in ("train", "val")]
    if len(fold) != sum(len(p.labels) for p in parts):
        raise PipelineError(f"{data_dir / FOLDS_FILE}: {len(fold)} folds for "
                            f"{sum(len(p.labels) for p in parts)} pool images; run prepare again")
    start, train, val = 0, [], []
    for part in parts:
        f = fold[start : start + len(part.labels)]
        start += len(part.labels)
        train.append((part.images[f != k], part.labels[f != k]))
        val.append((part.images[f == k], part.labels[f == k]))

    def joined(pieces: list[tuple[np.ndarray, np.ndarray]]) -> store.Split:
        return store.Split(np.concatenate([p[0] for p in pieces]),
                           np.concatenate([p[1] for p in pieces]))

    return joined(train), joined(val)


def pool_labels(data_dir: Path | str) -> np.ndarray:
    """The pool's labels in fold-file order (train, then val)."""
    return np.concatenate([store.load_split(data_dir, name).labels for name in ("train", "val")])
