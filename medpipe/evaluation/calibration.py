"""Calibration: does a predicted probability of 0.8 come true 80% of the time?

The probability examined is the one a reader acts on. With a positive class (``positive``,
the task's :attr:`~medpipe.task.Task.positive_index`): its probability against whether
the case is positive (the clinical question, "how likely is disease"). Without one: the
top-label confidence against whether the argmax is right.
Bins are ``bins`` equal-width intervals of [0, 1], the last one closed.
"""

from __future__ import annotations

import warnings

import numpy as np


def event_and_probability(labels: np.ndarray, probs: np.ndarray, *, positive: int | None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The probability studied and whether its event happened, as described above."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if positive is not None:
        return probs[:, positive], labels == positive
    return probs.max(1), probs.argmax(1) == labels


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int, *, positive: int | None
                ) -> list[dict]:
    """One row per non-empty bin: its edges, case count, mean predicted probability and
    observed frequency of the event (the reliability diagram's points)."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    p, event = event_and_probability(labels, probs, positive=positive)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_event = np.bincount(which, weights=event.astype(np.float64), minlength=bins)
    rows = []
    for b in np.flatnonzero(count):
        rows.append({
            "bin": int(b),
            "lower": round(b / bins, 6),
            "upper": round((b + 1) / bins, 6),
            "count": int(count[b]),
            "mean_probability": float(sum_p[b] / count[b]),
            "observed_frequency": float(sum_event[b] / count[b]),
        })
    return rows


def calibration_errors(rows: list[dict]) -> dict[str, float]:
    """Expected calibration error (bin-size-weighted mean gap between mean probability and
    observed frequency) and maximum calibration error, from :func:`reliability` rows.
    NaN with a warning when there are no cases."""
    n = sum(r["count"] for r in rows)
    if n == 0:
        warnings.warn("calibration is undefined without cases; reporting NaN", stacklevel=2)
        return {"ece": float("nan"), "mce": float("nan")}
    gaps = [abs(r["mean_probability"] - r["observed_frequency"]) for r in rows]
    return {
        "ece": float(sum(r["count"] * g for r, g in zip(rows, gaps, strict=True)) / n),
        "mce": float(max(gaps)),
    }
