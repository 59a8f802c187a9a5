"""Classification metrics a clinician reads. Degenerate cases give NaN and a warning.

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


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Binary: AUC of the positive-class probability. Multi-class: macro one-vs-rest
    over the classes present in ``labels``; NaN with a warning when fewer than two
    classes are present (there is no curve to draw)."""
    labels = np.asarray(labels)
    n_classes = probs.shape[1]
    present = np.unique(labels)
    if len(present) < 2:
        warnings.warn("ROC AUC is undefined with a single class present; reporting NaN",
                      stacklevel=2)
        return float("nan")
    if n_classes == 2:
        return binary_auc(labels == 1, probs[:, 1])
    aucs = []
    for k in range(n_classes):
        positive = labels == k
        if positive.all() or not positive.any():
            warnings.warn(f"class {k} absent from the labels: its one-vs-rest AUC is NaN and "
                          "left out of the macro mean", stacklevel=2)
            continue
        aucs.append(binary_auc(positive, probs[:, k]))
    return float(np.mean(aucs))


def classification_report(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Overall and per-class figures for ``probs`` (N, classes) against ``labels`` (N,)."""
    from sklearn import metrics as skm

    labels = np.asarray(labels)
    pred = probs.argmax(1)
    k = np.arange(len(classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, pred, labels=k, zero_division=np.nan
    )
    cm = skm.confusion_matrix(labels, pred, labels=k)
    per_class = {}
    for i, name in enumerate(classes):
        tn = cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i]
        fp = cm[:, i].sum() - cm[i, i]
        specificity = tn / (tn + fp) if tn + fp else float("nan")
        per_class[name] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "specificity": float(specificity),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # balanced acc. on absent classes
        balanced = skm.balanced_accuracy_score(labels, pred)
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced),
        "roc_auc": roc_auc(labels, probs),
        "per_class": per_class,
    }


def roc_points(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> list[dict]:
    """ROC curve rows for DVC plots: the positive class for a binary task, one-vs-rest
    curves (tagged with ``class``) for a multi-class one."""
    from sklearn import metrics as skm

    labels = np.asarray(labels)
    targets = [1] if len(classes) == 2 else range(len(classes))
    rows = []
    for k in targets:
        positive = labels == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, thr = skm.roc_curve(positive, probs[:, k], drop_intermediate=True)
        rows += [{"class": classes[k], "fpr": round(float(f), 6), "tpr": round(float(t), 6),
                  "threshold": round(float(min(h, 1.0)), 6)}
                 for f, t, h in zip(fpr, tpr, thr, strict=True)]
    return rows
