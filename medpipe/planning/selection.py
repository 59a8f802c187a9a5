"""Which trial is best: the one-standard-error rule.

Every trial whose validation score is within one standard error of the best one's is
taken as tied with it, and ties go to the configuration tried first, in the rules' order
(Breiman et al. 1984; Hastie, Tibshirani and Friedman, *The Elements of Statistical
Learning*, 7.10). A small or easy validation split (78 images; a validation AUC of 0.997)
cannot tell such trials apart, and a challenger drawn from the search space then replaces
the rules' choice only where it wins by more than the split's noise.
"""

from __future__ import annotations

import math
from typing import TypeVar

T = TypeVar("T")  # a trial: it has .score, .se and .config


def ranked(trials: list[T], order: list) -> list[T]:
    """``trials`` best first by the one-standard-error rule: those within one standard
    error of the best score, in ``order`` (the order configurations are tried: the rules'
    choices first), then the rest by score."""
    best = max(trials, key=lambda t: t.score)
    tied = [t for t in trials if t.score >= best.score - best.se]
    first = sorted(tied, key=lambda t: order.index(t.config))
    return first + sorted((t for t in trials if t not in tied), key=lambda t: -t.score)


def standard_error(auc: float, balanced: float, task: str, n: int,
                   per_class: tuple[int, ...]) -> float:
    """The standard error of a trial's score, the mean of its validation AUC and balanced
    accuracy, on a split of ``n`` images with ``per_class`` images (multi-label:
    positives) of each class: Hanley and McNeil's (1982) for the AUC (for more than two
    classes, each class against the rest, averaged as the macro AUC is); for the balanced
    accuracy, the binomial one of each recall it averages (each taken at the balanced
    accuracy), the two taken as fully correlated (on one split they rise and fall
    together, so their errors add). Zero when a figure is not finite."""
    if not (math.isfinite(auc) and math.isfinite(balanced)) or n <= 0:
        return 0.0
    auc, balanced = min(max(auc, 0.0), 1.0), min(max(balanced, 0.0), 1.0)
    pairs = [(per_class[-1], per_class[0])] if task == "binary" else [
        (k, n - k) for k in per_class]
    auc_var = sum(_auc_variance(auc, pos, neg) for pos, neg in pairs) / len(pairs) ** 2
    # the groups whose recalls the balanced accuracy averages: the classes present, or
    # for each finding its present and its absent images
    groups = [g for g in (per_class if task != "multilabel" else
                          [m for k in per_class for m in (k, n - k)]) if g > 0]
    balanced_var = (balanced * (1 - balanced) * sum(1 / g for g in groups) / len(groups) ** 2
                    if groups else 0.0)
    return (math.sqrt(auc_var) + math.sqrt(balanced_var)) / 2


def _auc_variance(a: float, pos: int, neg: int) -> float:
    if pos < 1 or neg < 1:
        return 0.0
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return max(0.0, (a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a))
               / (pos * neg))
