"""The headline of an evaluation: the few numbers that ``metrics/evaluate.json`` keeps for
``dvc metrics diff`` and ``dvc exp show``, taken from the summary that
``metrics/evaluate_detail.json`` holds whole (see :func:`medpipe.utils.files.write_metrics`).

Every name is the same for every dataset (no class or finding names), and every figure
that depends on a decision is taken at the decision the model is used with: the threshold
chosen for the positive class (two classes), the argmax (more classes), each finding's
own threshold (multi-label). Which of the three is the task's (:mod:`medpipe.task`)::

    roc_auc, roc_auc_low, roc_auc_high   AUC (macro one-vs-rest, mean per finding) and
                                         its 95% bootstrap interval
    accuracy, balanced_accuracy          (multi-label: accuracy, exact_match)
    sensitivity, specificity             of the positive class; macro means otherwise
    threshold                            two classes only
    ece                                  expected calibration error
    folds_{roc_auc,accuracy}_{mean,sd}   with fold models: the folds on the test split
    ensemble_{roc_auc,roc_auc_low,roc_auc_high,accuracy,sensitivity,specificity}
"""

from __future__ import annotations

from collections.abc import Callable

from medpipe.task import Task


def headline(summary: dict, task: Task) -> dict[str, float | None]:
    """The headline figures of an evaluation ``summary`` of ``task`` (None: undefined,
    or no bootstrap interval with ``evaluate.bootstrap: 0``)."""
    out = FIGURES[task.name](summary, task)
    folds = summary.get("folds")
    if folds:
        for name in ("roc_auc", "accuracy"):
            out[f"folds_{name}_mean"] = folds["mean"]["test"][name]
            out[f"folds_{name}_sd"] = folds["sd"]["test"][name]
    if summary.get("ensemble"):
        ensemble = FIGURES[task.name](summary["ensemble"], task)
        for name in ("roc_auc", "roc_auc_low", "roc_auc_high", "accuracy", "sensitivity",
                     "specificity"):
            out[f"ensemble_{name}"] = ensemble[name]
    return out


def _auc(summary: dict) -> dict[str, float | None]:
    interval = (summary.get("ci95") or {}).get("roc_auc") or {}
    return {"roc_auc": summary["roc_auc"], "roc_auc_low": interval.get("low"),
            "roc_auc_high": interval.get("high")}


def _single_label(summary: dict, task: Task) -> dict[str, float | None]:
    """One class per image: at the chosen threshold when the task has one, else argmax."""
    at = summary["at_threshold"] if task.thresholded else summary
    out = {**_auc(summary), **{k: at[k] for k in ("accuracy", "balanced_accuracy",
                                                     "sensitivity", "specificity")}}
    if task.thresholded:
        out["threshold"] = summary["threshold"]["value"]
    return {**out, "ece": summary["calibration"]["ece"]}


def _multilabel(summary: dict, task: Task) -> dict[str, float | None]:
    """Findings: at each finding's own threshold; sensitivity and specificity are means
    over the findings."""
    at = summary["at_threshold"]
    return {**_auc(summary), **{k: at[k] for k in ("accuracy", "exact_match", "sensitivity",
                                                     "specificity")},
            "ece": summary["calibration"]["ece"]}


FIGURES: dict[str, Callable[[dict, Task], dict[str, float | None]]] = {
    "multiclass": _single_label, "multilabel": _multilabel}
