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


def _join(names: tuple[str, ...]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _too_few(key: int, images: str, labels: np.ndarray, classes: list[str] | None) -> str:
    """What holds too few ``images``: a class, or (multi-label) a rarest finding or none."""
    if labels.ndim == 2 and key == labels.shape[1]:
        return f"{images} {'has' if images.startswith('1 ') else 'have'} no finding"
    name = str(key) if classes is None else f"'{classes[key]}'"
    if labels.ndim == 1:
        return f"class {name} has {images}"
    return f"finding {name} is the rarest finding of {images}"


def check_stratifiable(labels: np.ndarray, keys: np.ndarray, index: np.ndarray,
                       into: tuple[str, ...], where: str = "",
                       classes: list[str] | None = None) -> None:
    """Refuse a stratification key with fewer images in ``index`` than parts ``into``,
    naming its class: scikit-learn's refusal would name only its integer key."""
    counts = np.bincount(keys[index])
    short = np.flatnonzero((counts > 0) & (counts < len(into)))
    if len(short):
        key, n = int(short[0]), int(counts[short[0]])
        what = _too_few(key, f"{n} image{'' if n == 1 else 's'}{where}", np.asarray(labels),
                        classes)
        raise PipelineError(f"cannot split the data by class: {what}; at least {len(into)} "
                            f"are needed to put one in each of {_join(into)} (stage prepare)")


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
                  groups: np.ndarray | None = None,
                  classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Stratified (and, with ``groups``, patient-grouped) train/val/test index arrays,
    each sorted, reproducible from ``seed``; ``classes`` name a class too small to split."""
    keys = stratification_keys(labels)
    index = np.arange(len(keys))
    # Ungrouped, a class needs an image for each split it is spread over (scikit-learn
    # refuses fewer than two per cut). Grouped folds accept a sparse class, and
    # check_split_classes names one that misses a split.
    if groups is None:
        check_stratifiable(labels, keys, index, SPLITS, "", classes)
    rest, test = holdout(index, keys, groups, test_fraction, seed)
    if groups is None:
        check_stratifiable(labels, keys, rest, ("train", "val"), " outside the test split",
                           classes)
    train, val = holdout(rest, keys, groups, val_fraction / (1.0 - test_fraction), seed)
    return {"train": train, "val": val, "test": test}


def official_splits(splits: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int,
                    groups: np.ndarray | None = None,
                    classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """The source's own split; without val images, val is ``val_fraction`` of train,
    split off as above."""
    parts = {name: np.flatnonzero(splits == name) for name in SPLITS}
    if len(parts["val"]) == 0 and len(parts["train"]):
        keys = stratification_keys(labels)
        if groups is None:
            check_stratifiable(labels, keys, parts["train"], ("train", "val"),
                               " in the train split", classes)
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
