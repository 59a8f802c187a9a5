"""The evaluation summary: metrics at two decision rules, intervals, calibration.

Pure functions of labels and probabilities, so tests call them without a model or files;
``stages/evaluate.py`` feeds them and writes what they return.

Layout of the summary (``metrics/evaluate.json``)::

    split, n, positive_class (two classes only)
    accuracy, balanced_accuracy, roc_auc, sensitivity, specificity, ppv, npv, f1,
    per_class.<class>.{precision, recall, specificity, f1, support, sensitivity, ppv, npv}
        -> at probability 0.5 (two classes) or argmax (more)
    threshold.{rule, value, chosen_on, val_sensitivity, val_specificity, fallback}
    at_threshold.{accuracy, ..., per_class}   -> at threshold.value (two classes only)
    ci95.{roc_auc, accuracy, sensitivity, specificity}.{low, high, dropped}
    ci95.at_threshold.{accuracy, sensitivity, specificity}.{low, high, dropped}
    calibration.{ece, mce, bins}
    bootstrap.{resamples, seed, method}

A multi-label task (``task: multilabel``, see :func:`summarise_multilabel`) has instead::

    task, split, n, findings
    accuracy, exact_match, roc_auc (mean per-finding AUC), sensitivity, specificity, ppv,
    npv, f1 (macro means over the findings), per_label.<finding>.{auc, positives,
    negatives, sensitivity, specificity, ppv, npv, f1}      -> at probability 0.5
    threshold.{rule, chosen_on, target_sensitivity, per_label.<finding>.{value,
        val_sensitivity, val_specificity, fallback}}        -> one threshold per finding
    at_threshold.{accuracy, ..., per_label}                 -> at those thresholds
    ci95.roc_auc.{low, high, dropped}                       -> the mean AUC
    calibration.{ece, mce, bins}, bootstrap.{...}
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from medpipe.evaluation import bootstrap, calibration, metrics
from medpipe.params.sections import EvaluateParams

log = logging.getLogger(__name__)

FIGURES = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
CI_FIGURES = ("accuracy", "sensitivity", "specificity")
BOOTSTRAP_METHOD = "percentile, stratified by class"


def needs_validation(cfg: EvaluateParams, n_classes: int, multilabel: bool = False) -> bool:
    """Whether choosing the threshold(s) needs the validation split's probabilities."""
    return (multilabel or n_classes == 2) and isinstance(cfg.threshold, str)


def summarise(labels: np.ndarray, probs: np.ndarray, classes: list[str], cfg: EvaluateParams,
              val_labels: np.ndarray | None = None, val_probs: np.ndarray | None = None
              ) -> tuple[dict, list[dict]]:
    """The summary described in the module docstring, and the reliability-diagram rows.

    For two classes the threshold is chosen on ``val_labels``/``val_probs`` (needed
    unless ``cfg.threshold`` is a number) and applied unchanged to ``labels``/``probs``.
    """
    labels = np.asarray(labels)
    binary = len(classes) == 2
    summary: dict = {"split": cfg.split, "n": int(len(labels))}
    if binary:
        summary["positive_class"] = classes[1]
    base = metrics.classification_report(labels, probs, classes)
    summary.update({k: v for k, v in base.items() if k != "n"})

    threshold_value = None
    if binary:
        if needs_validation(cfg, 2):
            if val_labels is None or val_probs is None:
                raise ValueError(f"threshold rule {cfg.threshold!r} needs validation data")
            chosen = metrics.choose_threshold(val_labels, np.asarray(val_probs)[:, 1],
                                              cfg.threshold, cfg.target_sensitivity)
            chosen_on = "val"
        else:
            chosen = {"rule": "fixed", "value": float(cfg.threshold), "fallback": None}
            chosen_on = "params"
        threshold_value = chosen["value"]
        summary["threshold"] = {
            "rule": chosen["rule"],
            "value": threshold_value,
            "chosen_on": chosen_on,
            "target_sensitivity": (cfg.target_sensitivity
                                   if chosen["rule"] == "target_sensitivity" else None),
            "val_sensitivity": chosen.get("val_sensitivity"),
            "val_specificity": chosen.get("val_specificity"),
            "fallback": chosen["fallback"],
        }
        if chosen_on == "val" and cfg.split == "val":
            warnings.warn("the threshold is chosen on and applied to the validation split: "
                          "its figures are optimistic", stacklevel=2)
        at = metrics.classification_report(labels, probs, classes, threshold=threshold_value)
        summary["at_threshold"] = {**{k: at[k] for k in FIGURES}, "per_class": at["per_class"]}
    else:
        summary["threshold"] = {"rule": "argmax", "value": None, "chosen_on": None}

    summary["ci95"] = None
    if cfg.bootstrap > 0:
        rules = {"default": None}
        if binary:
            rules["at_threshold"] = threshold_value
        ci = bootstrap.bootstrap_intervals(labels, probs, n_resamples=cfg.bootstrap,
                                           seed=cfg.seed, thresholds=rules)
        summary["ci95"] = {"roc_auc": ci["roc_auc"],
                           **{k: ci[f"default.{k}"] for k in CI_FIGURES}}
        if binary:
            summary["ci95"]["at_threshold"] = {k: ci[f"at_threshold.{k}"] for k in CI_FIGURES}
        for name, interval in ci.items():
            if interval["dropped"]:
                log.info("bootstrap: %s undefined in %d of %d resamples (dropped)", name,
                         interval["dropped"], cfg.bootstrap)
    rows = calibration.reliability(labels, probs, cfg.calibration_bins)
    summary["calibration"] = {**calibration.calibration_errors(rows),
                              "bins": cfg.calibration_bins,
                              "probability": ("positive class" if binary
                                              else "top-label confidence")}
    summary["bootstrap"] = {"resamples": cfg.bootstrap, "seed": cfg.seed,
                            "level": bootstrap.LEVEL, "method": BOOTSTRAP_METHOD}
    return summary, rows


MULTILABEL_BOOTSTRAP_METHOD = "percentile, images resampled with replacement"


def summarise_multilabel(labels: np.ndarray, probs: np.ndarray, findings: list[str],
                         cfg: EvaluateParams, val_labels: np.ndarray | None = None,
                         val_probs: np.ndarray | None = None) -> tuple[dict, list[dict]]:
    """The multi-label summary (module docstring) and the reliability-diagram rows.

    ``labels`` are multi-hot ``(N, K)``, ``probs`` one sigmoid per finding. Each finding
    gets its own threshold, chosen on the validation split by ``cfg.threshold`` (or the
    fixed number for all) and applied unchanged to ``labels``/``probs``. Calibration pools
    every (image, finding) pair: the finding's probability against its presence."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    summary: dict = {"task": "multilabel", "split": cfg.split, "n": int(len(labels)),
                     "findings": list(findings)}
    aucs = metrics.label_aucs(labels, probs, findings)
    base = metrics.multilabel_report(labels, probs, findings, aucs=aucs)
    summary.update({k: v for k, v in base.items() if k != "n"})

    chosen_on = "val" if needs_validation(cfg, 0, multilabel=True) else "params"
    if chosen_on == "val" and (val_labels is None or val_probs is None):
        raise ValueError(f"threshold rule {cfg.threshold!r} needs validation data")
    per_label = {}
    for k, name in enumerate(findings):
        if chosen_on == "val":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                chosen = metrics.choose_threshold(np.asarray(val_labels)[:, k],
                                                  np.asarray(val_probs)[:, k], cfg.threshold,
                                                  cfg.target_sensitivity)
            for w in caught:  # say which finding the fallback is for
                warnings.warn(f"finding '{name}': {w.message}", stacklevel=2)
        else:
            chosen = {"value": float(cfg.threshold), "fallback": None}
        per_label[name] = {"value": chosen["value"],
                           "val_sensitivity": chosen.get("val_sensitivity"),
                           "val_specificity": chosen.get("val_specificity"),
                           "fallback": chosen["fallback"]}
    summary["threshold"] = {
        "rule": cfg.threshold if isinstance(cfg.threshold, str) else "fixed",
        "chosen_on": chosen_on,
        "target_sensitivity": (cfg.target_sensitivity
                               if cfg.threshold == "target_sensitivity" else None),
        "per_label": per_label,
    }
    if chosen_on == "val" and cfg.split == "val":
        warnings.warn("the thresholds are chosen on and applied to the validation split: "
                      "their figures are optimistic", stacklevel=2)
    thresholds = np.array([per_label[name]["value"] for name in findings])
    at = metrics.multilabel_report(labels, probs, findings, thresholds, aucs=aucs)
    summary["at_threshold"] = {k: v for k, v in at.items() if k not in ("n", "roc_auc")}

    summary["ci95"] = None
    if cfg.bootstrap > 0:
        summary["ci95"] = {"roc_auc": bootstrap.multilabel_auc_interval(
            labels, probs, n_resamples=cfg.bootstrap, seed=cfg.seed)}
    flat = probs.reshape(-1)
    rows = calibration.reliability(labels.reshape(-1).astype(np.int64),
                                   np.stack([1.0 - flat, flat], axis=1), cfg.calibration_bins)
    summary["calibration"] = {**calibration.calibration_errors(rows),
                              "bins": cfg.calibration_bins, "probability": "finding"}
    summary["bootstrap"] = {"resamples": cfg.bootstrap, "seed": cfg.seed,
                            "level": bootstrap.LEVEL, "method": MULTILABEL_BOOTSTRAP_METHOD}
    return summary, rows
