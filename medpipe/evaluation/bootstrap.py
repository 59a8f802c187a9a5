"""Bootstrap confidence intervals for the evaluation metrics, vectorised over resamples.

Resampling is stratified by the true class: each resample draws, with replacement, as
many cases of each class as the split holds. The split itself was drawn stratified (the
prepare stage), so this mirrors how it was sampled, and every resample keeps both
classes, so AUC, sensitivity and specificity are defined in each one. Intervals are
percentile intervals. A resample where a metric is undefined (e.g. PPV when nothing is
called positive) is dropped for that metric and counted.

Resamples are scored in blocks: a ``(B, N)`` index matrix, one ``bincount`` for the
confusion matrices and one per class for the rank-based AUC. 1,000 resamples of 3,000
cases take under a second; the block size bounds memory for large test sets.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from medpipe.evaluation.metrics import class_rates, confusion, decide, summarise_rates
from medpipe.utils.progress import track

LEVEL = 0.95  # two-sided coverage of the intervals
BLOCK_CELLS = 4_000_000  # resamples x cases scored at once (~32 MB per int64 matrix)


def resample_blocks(labels: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of ``(b, N)`` case indices, drawn with replacement within each class;
    ``n_resamples`` rows in all, the same for the same seed and number of cases (which
    sets the block size)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    block = max(1, BLOCK_CELLS // max(len(labels), 1))
    for start in track(range(0, n_resamples, block), "evaluate: bootstrap", unit="block",
                       leave=False):
        b = min(block, n_resamples - start)
        parts = [m[rng.integers(0, len(m), size=(b, len(m)))] for m in members]
        yield np.concatenate(parts, axis=1) if parts else np.zeros((b, 0), dtype=np.int64)


def resample_indices(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """All resamples of :func:`resample_blocks` as one ``(n_resamples, N)`` matrix."""
    return np.concatenate(list(resample_blocks(labels, n_resamples, seed)), axis=0)


def auc_resampled(positive: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half) of each resample ``idx[b]``; NaN where a
    resample lacks positives or negatives. Equal to
    :func:`medpipe.evaluation.metrics.binary_auc`."""
    positive = np.asarray(positive, dtype=bool)
    _, level = np.unique(scores, return_inverse=True)  # score -> rank of distinct value
    n_levels = int(level.max()) + 1 if len(level) else 1
    b = idx.shape[0]
    code = np.arange(b)[:, None] * n_levels + level[idx]  # (B, N)
    pos = positive[idx]
    w_pos = np.bincount(code[pos], minlength=b * n_levels).reshape(b, n_levels)
    w_neg = np.bincount(code[~pos], minlength=b * n_levels).reshape(b, n_levels)
    below = np.cumsum(w_neg, axis=1) - w_neg  # negatives scoring strictly lower
    wins = (w_pos * (below + 0.5 * w_neg)).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return wins / (w_pos.sum(1) * w_neg.sum(1))


def macro_auc_resampled(labels: np.ndarray, probs: np.ndarray, idx: np.ndarray, *,
                        positive: int | None) -> np.ndarray:
    """Per-resample AUC as :func:`medpipe.evaluation.metrics.roc_auc` defines it: the
    ``positive`` class's, or without one macro one-vs-rest over the classes present."""
    labels = np.asarray(labels)
    if positive is not None:
        return auc_resampled(labels == positive, probs[:, positive], idx)
    per_class = np.stack([auc_resampled(labels == k, probs[:, k], idx)
                          for k in range(probs.shape[1])], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        return np.nanmean(per_class, axis=1)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> dict:
    """Percentile interval of the defined values; ``dropped`` counts the undefined ones."""
    values = np.asarray(values, dtype=np.float64)
    ok = values[np.isfinite(values)]
    dropped = int(len(values) - len(ok))
    if len(ok) == 0:
        return {"low": float("nan"), "high": float("nan"), "dropped": dropped}
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(ok, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "dropped": dropped}


def bootstrap_intervals(labels: np.ndarray, probs: np.ndarray, *, n_resamples: int, seed: int,
                        thresholds: dict[str, float | None], positive: int | None
                        ) -> dict[str, dict]:
    """95% intervals of AUC (key ``roc_auc``) and, for each named decision rule in
    ``thresholds`` (see :func:`medpipe.evaluation.metrics.decide`), of accuracy, sensitivity and
    specificity (keys ``<rule>.accuracy`` etc.). Overall sensitivity/specificity are the
    ``positive`` class's, or without one macro means, as in the report."""
    values = bootstrap_values(labels, probs, n_resamples=n_resamples, seed=seed,
                              thresholds=thresholds, positive=positive)
    return {key: percentile_interval(v) for key, v in values.items()}


def bootstrap_values(labels: np.ndarray, probs: np.ndarray, *, n_resamples: int, seed: int,
                     thresholds: dict[str, float | None], positive: int | None
                     ) -> dict[str, np.ndarray]:
    """The figures of :func:`bootstrap_intervals`, one value per resample (NaN where
    undefined): what an interval, or the interval of a difference, is taken from."""
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    if n_resamples < 1 or len(labels) == 0:
        return {}
    decisions = {name: decide(probs, threshold, positive=positive)
                 for name, threshold in thresholds.items()}
    values: dict[str, list[np.ndarray]] = {}
    for idx in resample_blocks(labels, n_resamples, seed):
        labels_r = labels[idx]
        values.setdefault("roc_auc", []).append(
            macro_auc_resampled(labels, probs, idx, positive=positive))
        for name, pred in decisions.items():
            pred_r = pred[idx]
            rates = summarise_rates(class_rates(confusion(labels_r, pred_r, probs.shape[1])),
                                    positive=positive)
            values.setdefault(f"{name}.accuracy", []).append((pred_r == labels_r).mean(1))
            for metric in ("sensitivity", "specificity"):
                values.setdefault(f"{name}.{metric}", []).append(rates[metric])
    return {key: np.concatenate(parts) for key, parts in values.items()}


def multilabel_auc_interval(labels: np.ndarray, probs: np.ndarray, *, n_resamples: int,
                            seed: int) -> dict:
    """95% interval of the mean per-finding AUC of a multi-label task (``labels`` multi-hot
    ``(N, K)``). Images are resampled with replacement, not stratified: an image carries
    several findings at once, so there are no classes to stratify by. In each resample the
    mean is over the findings whose AUC is defined there; a resample with none is dropped."""
    labels = np.asarray(labels)
    if n_resamples < 1 or len(labels) == 0:
        return {"low": float("nan"), "high": float("nan"), "dropped": 0}
    return percentile_interval(multilabel_auc_values(labels, probs, n_resamples=n_resamples,
                                                     seed=seed))


def multilabel_auc_values(labels: np.ndarray, probs: np.ndarray, *, n_resamples: int,
                          seed: int) -> np.ndarray:
    """The mean per-finding AUC of each resample (see :func:`multilabel_auc_interval`)."""
    labels = np.asarray(labels)
    means = []
    one_stratum = np.zeros(len(labels), dtype=np.int64)
    for idx in resample_blocks(one_stratum, n_resamples, seed):
        per_label = np.stack([auc_resampled(labels[:, k] == 1, probs[:, k], idx)
                              for k in range(labels.shape[1])], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
            means.append(np.nanmean(per_label, axis=1))
    return np.concatenate(means)


def difference_interval(high: np.ndarray, low: np.ndarray, level: float = LEVEL) -> dict:
    """Percentile interval of ``high - low`` over paired resamples of two independent
    groups (each resampled on its own)."""
    return percentile_interval(np.asarray(high) - np.asarray(low), level)
