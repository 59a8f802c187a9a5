"""Metrics of multi-label findings: labels are multi-hot ``(N, K)`` (finding k is present
in image i when ``labels[i, k] == 1``) and the probabilities one sigmoid per finding, so
each finding is its own two-class problem. Degenerate cases give NaN and a warning."""

from __future__ import annotations

import warnings

import numpy as np

from medpipe.evaluation.metrics import SUMMARY, binary_auc, pr_points, roc_points


def label_aucs(labels: np.ndarray, probs: np.ndarray, names: list[str] | None = None
               ) -> np.ndarray:
    """AUC of each finding ``(K,)``; NaN, with a warning naming it, for a finding that
    has no positive or no negative image in ``labels``."""
    labels = np.asarray(labels)
    out = np.full(labels.shape[1], np.nan)
    for k in range(labels.shape[1]):
        present = labels[:, k] == 1
        if present.all() or not present.any():
            name = names[k] if names else f"{k}"
            kind = "negative" if present.all() else "positive"
            warnings.warn(f"finding '{name}' has no {kind} image in the labels: its AUC (and "
                          f"{'specificity' if present.all() else 'sensitivity'}) is NaN and "
                          "left out of the mean", stacklevel=2)
            continue
        out[k] = binary_auc(present, probs[:, k])
    return out


def mean_label_auc(labels: np.ndarray, probs: np.ndarray, names: list[str] | None = None
                   ) -> float:
    """Mean of the defined per-finding AUCs (:func:`label_aucs`); NaN if none is."""
    aucs = label_aucs(labels, probs, names)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def label_rates(present: np.ndarray, called: np.ndarray) -> dict[str, np.ndarray]:
    """Per finding ``(K,)``: sensitivity, specificity, PPV, NPV and F1 of the calls
    ``called`` against ``present`` (both bool ``(N, K)``); NaN where undefined (0/0)."""
    tp = (present & called).sum(0).astype(np.float64)
    fn = (present & ~called).sum(0)
    fp = (~present & called).sum(0)
    tn = (~present & ~called).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                "ppv": tp / (tp + fp), "npv": tn / (tn + fn), "f1": 2 * tp / (2 * tp + fp + fn)}


def report(labels: np.ndarray, probs: np.ndarray, names: list[str],
                      thresholds: np.ndarray | None = None, aucs: np.ndarray | None = None
                      ) -> dict:
    """Figures of a multi-label task with finding k called when ``probs[:, k] >=
    thresholds[k]`` (0.5 for all when None).

    Overall: ``accuracy`` (right decisions over all images and findings), ``exact_match``
    (images with every finding right), ``roc_auc`` (mean per-finding AUC) and macro means
    over the findings of sensitivity, specificity, PPV, NPV and F1 (of those defined);
    ``per_label`` the same per finding, with its positives and negatives.
    """
    labels = np.asarray(labels)
    k = labels.shape[1]
    t = np.full(k, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    present, called = labels == 1, probs >= t[None, :]
    aucs = label_aucs(labels, probs, names) if aucs is None else aucs
    rates = label_rates(present, called)
    per_label = {}
    for i, name in enumerate(names):
        per_label[name] = {
            "auc": float(aucs[i]),
            "positives": int(present[:, i].sum()),
            "negatives": int((~present[:, i]).sum()),
            **{key: float(rates[key][i]) for key in SUMMARY},
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: stays NaN
        means = {key: float(np.nanmean(rates[key])) for key in SUMMARY}
        roc = float(np.nanmean(aucs))
    right = present == called
    return {
        "n": int(len(labels)),
        "accuracy": float(right.mean()) if right.size else float("nan"),
        "exact_match": float(right.all(1).mean()) if len(labels) else float("nan"),
        "roc_auc": roc,
        **means,
        "per_label": per_label,
    }


def curves(labels: np.ndarray, probs: np.ndarray, names: list[str]
                      ) -> tuple[list[dict], list[dict]]:
    """ROC and precision-recall rows per finding (tagged ``class``), as
    :func:`~medpipe.evaluation.metrics.roc_points` and
    :func:`~medpipe.evaluation.metrics.pr_points` give them for one-vs-rest classes."""
    labels = np.asarray(labels)
    roc, pr = [], []
    for k, name in enumerate(names):
        # The finding as a two-class problem: "absent" / name, positive second.
        two = np.stack([1.0 - probs[:, k], probs[:, k]], axis=1)
        roc += roc_points(labels[:, k], two, ["absent", name], positive=1)
        pr += pr_points(labels[:, k], two, ["absent", name], positive=1)
    return roc, pr
