"""Train/val/test splits: stratified by label, grouped by patient when patients are known.

Stratification key: the class for single-label data; for multi-label data the image's
rarest finding (so every finding, however rare, is spread over the three splits), or
"no finding". With patient ids the split is made by scikit-learn's StratifiedGroupKFold,
so that no patient has images in two splits; its folds make the fractions approximate
(1 / round(1 / fraction) of the patients).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from medpipe import PipelineError

SPLITS = ("train", "val", "test")


def stratification_keys(labels: np.ndarray) -> np.ndarray:
    """One key per image: its class, or (multi-hot labels) its rarest finding, else K."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    k = labels.shape[1]
    frequency = labels.sum(axis=0).astype(np.float64)
    ranked = np.where(labels.astype(bool), frequency[None, :], np.inf)
    keys = np.argmin(ranked, axis=1)
    keys[~labels.astype(bool).any(axis=1)] = k
    return keys


def check_fractions(val_fraction: float, test_fraction: float) -> None:
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


def holdout(index: np.ndarray, keys: np.ndarray, groups: np.ndarray | None,
            fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) parts of ``index``, the held-out part about ``fraction`` of it,
    stratified by ``keys[index]`` and, with ``groups``, never splitting a group."""
    try:
        if groups is None:
            kept, held = train_test_split(index, test_size=fraction, stratify=keys[index],
                                          random_state=seed)
        else:
            folds = max(2, round(1.0 / fraction))
            n_groups = len(np.unique(groups[index]))
            if n_groups < folds:
                raise PipelineError(
                    f"cannot split {n_groups} patients into a {fraction:.0%} part; more "
                    f"patients are needed (stage prepare)")
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            k, h = next(splitter.split(index, keys[index], groups[index]))
            kept, held = index[k], index[h]
    except ValueError as e:  # too few images of a class to stratify
        raise PipelineError(f"cannot split the data by class: {e} (stage prepare)") from None
    return np.sort(kept), np.sort(held)


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                  groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stratified (and, with ``groups``, patient-grouped) train/val/test index arrays,
    each sorted, reproducible from ``seed``."""
    check_fractions(val_fraction, test_fraction)
    keys = stratification_keys(labels)
    index = np.arange(len(keys))
    rest, test = holdout(index, keys, groups, test_fraction, seed)
    train, val = holdout(rest, keys, groups, val_fraction / (1.0 - test_fraction), seed)
    return {"train": train, "val": val, "test": test}


def official_splits(splits: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int,
                    groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The source's own split; without val images, val is ``val_fraction`` of train,
    split off as above."""
    parts = {name: np.flatnonzero(splits == name) for name in SPLITS}
    if len(parts["val"]) == 0 and len(parts["train"]):
        if not 0.0 < val_fraction < 1.0:
            raise PipelineError("params.yaml: 'prepare.val_fraction' must be between 0 and 1 "
                                "(stage prepare)")
        keys = stratification_keys(labels)
        parts["train"], parts["val"] = holdout(parts["train"], keys, groups, val_fraction,
                                               seed)
    return parts


def check_split_classes(labels: np.ndarray, parts: dict[str, np.ndarray],
                        classes: list[str]) -> None:
    """Every class (every finding, for multi-label) must appear in every split, or a
    metric would silently mean less."""
    labels = np.asarray(labels)
    for name, idx in parts.items():
        if len(idx) == 0:
            raise PipelineError(f"split '{name}' is empty (stage prepare)")
        present = (labels[idx].sum(axis=0) if labels.ndim == 2
                   else np.bincount(labels[idx], minlength=len(classes)))
        for k, count in enumerate(present):
            if count == 0:
                raise PipelineError(
                    f"class '{classes[k]}' has no images in split '{name}'; add images or "
                    f"change the split fractions (stage prepare)"
                )
