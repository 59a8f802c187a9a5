"""Classification metrics a clinician reads. Degenerate cases give NaN and a warning.

Whether there is a positive class is the task's decision
(:attr:`medpipe.task.Task.positive_index`); the functions that depend on it take it as
``positive``: the index of the positive class of a two-class task, or None for a task
whose figures are per class (one-vs-rest, argmax).

scikit-learn is imported inside the functions that need it: the train stage computes
a validation AUC every epoch and should not pay its import time for that.
"""

from __future__ import annotations

import warnings

import numpy as np


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: the probability that a
    random positive scores above a random negative, ties counting one half. Exact, and
    equal to ``sklearn.metrics.roc_auc_score``."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Average ranks (1-based) with ties sharing the mean of the ranks they span.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(labels: np.ndarray, probs: np.ndarray, *, positive: int | None) -> float:
    """With a ``positive`` class: the AUC of its probability. Without: macro one-vs-rest
    over the classes present in ``labels``. NaN with a warning when fewer than two
    classes are present (there is no curve to draw)."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        warnings.warn("ROC AUC is undefined with a single class present; reporting NaN",
                      stacklevel=2)
        return float("nan")
    if positive is not None:
        return binary_auc(labels == positive, probs[:, positive])
    aucs = []
    for k in range(probs.shape[1]):
        in_k = labels == k
        if in_k.all() or not in_k.any():
            warnings.warn(f"class {k} absent from the labels: its one-vs-rest AUC is NaN and "
                          "left out of the macro mean", stacklevel=2)
            continue
        aucs.append(binary_auc(in_k, probs[:, k]))
    return float(np.mean(aucs))


def decide(probs: np.ndarray, threshold: float | None = None, *,
           positive: int | None) -> np.ndarray:
    """Predicted class per row. With a ``positive`` class (of two): that class when its
    probability is ``>= threshold`` (0.5 when None), else the other one. Without: argmax,
    and ``threshold`` must be None."""
    probs = np.asarray(probs)
    if positive is not None:
        t = 0.5 if threshold is None else threshold
        return np.where(probs[:, positive] >= t, positive, 1 - positive).astype(np.int64)
    if threshold is not None:
        raise ValueError("a decision threshold applies to a positive class only")
    return probs.argmax(1)


def confusion(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts ``(..., K, K)``, rows actual, columns predicted. Leading axes of
    ``labels``/``pred`` (e.g. bootstrap resamples) are kept: one matrix per row."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    lead = labels.shape[:-1]
    m = int(np.prod(lead)) if lead else 1
    row = np.arange(m).reshape(*lead, 1) if lead else 0
    code = (row * n_classes + labels) * n_classes + pred
    counts = np.bincount(code.ravel(), minlength=m * n_classes * n_classes)
    return counts.reshape(*lead, n_classes, n_classes)


def class_rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest figures per class from confusion matrices ``(..., K, K)``: arrays
    ``(..., K)`` of sensitivity, specificity, PPV, NPV and F1; NaN where undefined (0/0)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fn = cm.sum(-1) - tp
    fp = cm.sum(-2) - tp
    tn = cm.sum((-2, -1))[..., None] - tp - fn - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


SUMMARY = ("sensitivity", "specificity", "ppv", "npv", "f1")


def summarise_rates(rates: dict[str, np.ndarray], *, positive: int | None
                    ) -> dict[str, np.ndarray]:
    """Overall figures from :func:`class_rates`: the ``positive`` class's, or without one
    the macro mean over the classes where the figure is defined."""
    if positive is not None:
        return {k: rates[k][..., positive] for k in SUMMARY}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        for k in SUMMARY:
            out[k] = np.nanmean(rates[k], axis=-1)
    return out


def classification_report(labels: np.ndarray, probs: np.ndarray, classes: list[str],
                          threshold: float | None = None, *, positive: int | None) -> dict:
    """Overall and per-class figures for ``probs`` (N, classes) against ``labels`` (N,).

    Decisions as in :func:`decide`. Overall sensitivity, specificity, PPV, NPV and F1 are
    those of the ``positive`` class, or without one macro means over the classes.
    Per class, ``recall`` is the sensitivity and ``precision`` the PPV (both names are
    kept). A figure whose denominator is empty (a class absent from ``labels``, or never
    predicted) is NaN, with a warning.
    """
    labels = np.asarray(labels)
    k = len(classes)
    pred = decide(probs, threshold, positive=positive)
    cm = confusion(labels, pred, k)
    rates = class_rates(cm)
    support = cm.sum(1)
    for i, name in enumerate(classes):
        if support[i] == 0:
            warnings.warn(f"class '{name}' absent from the labels: its sensitivity (and its "
                          "F1 if it is never predicted either) is NaN", stacklevel=2)
        elif cm[:, i].sum() == 0:
            warnings.warn(f"class '{name}' never predicted: its PPV is NaN", stacklevel=2)
    per_class = {}
    for i, name in enumerate(classes):
        per_class[name] = {
            "precision": float(rates["ppv"][i]),
            "recall": float(rates["sensitivity"][i]),
            "specificity": float(rates["specificity"][i]),
            "f1": float(rates["f1"][i]),
            "support": int(support[i]),
            "sensitivity": float(rates["sensitivity"][i]),
            "ppv": float(rates["ppv"][i]),
            "npv": float(rates["npv"][i]),
        }
    present = support > 0
    overall = summarise_rates(rates, positive=positive)
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        # Mean recall over the classes present (as scikit-learn's balanced accuracy).
        "balanced_accuracy": (float(rates["sensitivity"][present].mean()) if present.any()
                              else float("nan")),
        "roc_auc": roc_auc(labels, probs, positive=positive),
        **{name: float(overall[name]) for name in SUMMARY},
        "per_class": per_class,
    }


def choose_threshold(labels: np.ndarray, p_positive: np.ndarray, rule: str | float,
                     target_sensitivity: float) -> dict:
    """Decision threshold on the positive-class probability, chosen on (validation)
    ``labels`` (1 or True where the case is positive); a case is called positive when its
    probability is ``>=`` the threshold.

    ``rule``: ``"youden"`` maximises sensitivity + specificity - 1 (on ties, the operating
    point with the fewest positive calls); ``"target_sensitivity"`` takes the operating
    point with the fewest positive calls whose sensitivity reaches ``target_sensitivity``
    (so the best specificity that allows); a number is used as it is. The threshold is
    placed midway between the lowest validation score called positive and the next lower
    score: the same validation decisions, the largest margin on both sides. When a rule
    is undefined (a class missing) the threshold falls back to 0.5 with a warning.
    Returns the value and its figures on ``labels``.
    """
    labels = np.asarray(labels)
    positive = labels == 1
    value, note = 0.5, None
    if not isinstance(rule, str):
        value = float(rule)
    elif positive.all() or not positive.any():
        note = f"'{rule}' needs both classes in the validation split"
    else:
        from sklearn.metrics import roc_curve

        fpr, tpr, thr = roc_curve(positive, p_positive, drop_intermediate=False)
        if rule == "youden":
            i = int(np.argmax(tpr - fpr))  # first maximum: the highest threshold
        elif rule == "target_sensitivity":
            i = int(np.argmax(tpr >= target_sensitivity - 1e-12))
        else:
            raise ValueError(f"unknown threshold rule {rule!r}")
        if np.isfinite(thr[i]):
            # Every threshold in (next lower score, thr[i]] makes the same validation
            # decisions; the middle of that gap is the one least tied to these cases.
            lower = thr[i + 1] if i + 1 < len(thr) else thr[i]
            value = float((thr[i] + lower) / 2.0)
        else:  # the no-positive corner: no threshold separates anything on this split
            note = f"'{rule}' found no useful threshold on the validation split"
    if note:
        warnings.warn(f"{note}; using 0.5", stacklevel=2)
    pred = p_positive >= value
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return {
        "rule": rule if isinstance(rule, str) else "fixed",
        "value": value,
        "fallback": note,
        "val_sensitivity": float((pred & positive).sum() / n_pos) if n_pos else float("nan"),
        "val_specificity": float((~pred & ~positive).sum() / n_neg) if n_neg else float("nan"),
    }


def roc_points(labels: np.ndarray, probs: np.ndarray, classes: list[str], *,
               positive: int | None) -> list[dict]:
    """ROC curve rows for DVC plots, tagged with ``class``: the ``positive`` class's
    curve, or without one a one-vs-rest curve per class."""
    from sklearn import metrics as skm

    labels = np.asarray(labels)
    targets = [positive] if positive is not None else range(len(classes))
    rows = []
    for k in targets:
        in_k = labels == k
        if in_k.all() or not in_k.any():
            continue
        fpr, tpr, thr = skm.roc_curve(in_k, probs[:, k], drop_intermediate=True)
        rows += [{"class": classes[k], "fpr": round(float(f), 6), "tpr": round(float(t), 6),
                  "threshold": round(float(min(h, 1.0)), 6)}
                 for f, t, h in zip(fpr, tpr, thr, strict=True)]
    return rows


def pr_points(labels: np.ndarray, probs: np.ndarray, classes: list[str], *,
              positive: int | None) -> list[dict]:
    """Precision-recall curve rows for DVC plots, as :func:`roc_points` (the ``positive``
    class's, or one-vs-rest per class). The last point (recall 0, precision 1) has no
    threshold; it is written as 1."""
    from sklearn import metrics as skm

    labels = np.asarray(labels)
    targets = [positive] if positive is not None else range(len(classes))
    rows = []
    for k in targets:
        in_k = labels == k
        if not in_k.any():
            continue
        precision, recall, thr = skm.precision_recall_curve(in_k, probs[:, k])
        thr = np.append(thr, 1.0)
        rows += [{"class": classes[k], "recall": round(float(r), 6),
                  "precision": round(float(p), 6), "threshold": round(float(min(h, 1.0)), 6)}
                 for p, r, h in zip(precision, recall, thr, strict=True)]
    return rows
