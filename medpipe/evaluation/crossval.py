"""Cross-validation evidence: each fold model's figures on its own fold and on the test
split, their mean and sample sd, and the fold ensemble on the test split.

Layout (in ``metrics/evaluate_detail.json``; their headline figures in
``metrics/evaluate.json``)::

    folds.{k, per_fold: [{fold, val.{roc_auc, accuracy}, test.{roc_auc, accuracy,
        sensitivity, specificity}}], mean.{val, test}, sd.{val, test}}
    ensemble   -> the summary of the task's evaluation (figures, threshold, ci95,
                  calibration) for the mean probability of the fold models on the test
                  split, its threshold chosen on the pooled out-of-fold predictions

Test figures of a fold are at the decision its own fold chose (the threshold rule of
``evaluate.threshold`` on the fold's validation images); the ensemble's threshold is
chosen on every pool image, each scored by the one fold model that did not train on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from medpipe.params.sections import EvaluateParams
from medpipe.task import Task

TEST_FIGURES = ("roc_auc", "accuracy", "sensitivity", "specificity")
VAL_FIGURES = ("roc_auc", "accuracy")

Summarise = Callable[..., tuple[dict, list[dict]]]


def figures_at_decision(summary: dict) -> dict:
    """AUC, and accuracy, sensitivity and specificity at the summary's decision rule."""
    at = summary.get("at_threshold", summary)
    return {"roc_auc": summary["roc_auc"], **{k: at[k] for k in TEST_FIGURES[1:]}}


def summarise(summarise_task: Summarise, scores: list, test_labels: np.ndarray, task: Task,
              cfg: EvaluateParams) -> tuple[dict, dict]:
    """The ``folds`` and ``ensemble`` sections from the fold models' ``scores``
    (:class:`medpipe.inference.ensemble.FoldScores`)."""
    quick = dataclasses.replace(cfg, split="test", bootstrap=0)
    at_half = dataclasses.replace(cfg, split="val", bootstrap=0, threshold=0.5)
    per_fold = []
    for sc in scores:
        val, _ = summarise_task(sc.val_labels, sc.val_probs, task, at_half)
        test, _ = summarise_task(test_labels, sc.test_probs, task, quick, sc.val_labels,
                                 sc.val_probs)
        per_fold.append({"fold": sc.fold, "val": {k: val[k] for k in VAL_FIGURES},
                         "test": figures_at_decision(test)})
    section = {"k": len(scores), "per_fold": per_fold,
               "mean": {}, "sd": {}}
    for part, names in (("val", VAL_FIGURES), ("test", TEST_FIGURES)):
        values = {n: np.array([f[part][n] for f in per_fold], dtype=np.float64) for n in names}
        section["mean"][part] = {n: float(np.nanmean(v)) for n, v in values.items()}
        section["sd"][part] = {n: float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
                               for n, v in values.items()}
    oof_labels = np.concatenate([sc.val_labels for sc in scores])
    oof_probs = np.concatenate([sc.val_probs for sc in scores])
    mean_probs = np.mean([sc.test_probs for sc in scores], axis=0)
    ensemble, _ = summarise_task(test_labels, mean_probs, task,
                                 dataclasses.replace(cfg, split="test"), oof_labels, oof_probs)
    if ensemble["threshold"].get("chosen_on") == "val":
        ensemble["threshold"]["chosen_on"] = "out-of-fold"
    ensemble["members"] = len(scores)
    return section, ensemble
