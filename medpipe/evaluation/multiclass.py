"""The evaluation of a multi-class task (one class per image): the summary, the
per-image predictions, the curves, the Grad-CAM sample, the report.

Pure functions of labels and probabilities, so tests call them without a model or files.
Whether there is a positive class (two classes) is the task's
:attr:`~medpipe.task.Task.positive_index`, passed on to the metrics as ``positive``.
Layout of the summary (``metrics/evaluate_detail.json``; ``metrics/evaluate.json`` keeps
its headline figures, :mod:`medpipe.evaluation.headline`)::

    split, n, positive_class (two classes only)
    accuracy, balanced_accuracy, roc_auc, sensitivity, specificity, ppv, npv, f1,
    per_class.<class>.{precision, recall, specificity, f1, support, sensitivity, ppv, npv}
        -> at probability 0.5 (two classes) or argmax (more)
    threshold.{rule, value, chosen_on, val_sensitivity, val_specificity, fallback}
    at_threshold.{accuracy, ..., per_class}   -> at threshold.value (two classes only)
    ci95.{roc_auc, accuracy, sensitivity, specificity}.{low, high, dropped}
    ci95.at_threshold.{accuracy, sensitivity, specificity}.{low, high, dropped}
    calibration.{ece, mce, bins, probability}
    bootstrap.{resamples, seed, level, method}
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from medpipe.evaluation import bootstrap, calibration, gradcam, metrics
from medpipe.evaluation.report import NAMES, RULES, fmt, tail, tta_line, with_ci
from medpipe.params.sections import EvaluateParams
from medpipe.task import Task

log = logging.getLogger(__name__)

FIGURES = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
CI_FIGURES = ("accuracy", "sensitivity", "specificity")
BOOTSTRAP_METHOD = "percentile, stratified by class"


def summarise(labels: np.ndarray, probs: np.ndarray, task: Task, cfg: EvaluateParams,
              val_labels: np.ndarray | None = None, val_probs: np.ndarray | None = None
              ) -> tuple[dict, list[dict]]:
    """The summary described in the module docstring, and the reliability-diagram rows.

    With a positive class the threshold is chosen on ``val_labels``/``val_probs`` (needed
    unless ``cfg.threshold`` is a number) and applied unchanged to ``labels``/``probs``.
    """
    labels = np.asarray(labels)
    classes, positive = task.classes, task.positive_index
    summary: dict = {"split": cfg.split, "n": int(len(labels))}
    if positive is not None:
        summary["positive_class"] = task.positive_class
    base = metrics.classification_report(labels, probs, classes, positive=positive)
    summary.update({k: v for k, v in base.items() if k != "n"})

    threshold_value = None
    if positive is not None:
        summary["threshold"] = _threshold(cfg, positive, val_labels, val_probs)
        threshold_value = summary["threshold"]["value"]
        at = metrics.classification_report(labels, probs, classes, threshold=threshold_value,
                                           positive=positive)
        summary["at_threshold"] = {**{k: at[k] for k in FIGURES}, "per_class": at["per_class"]}
    else:
        summary["threshold"] = {"rule": "argmax", "value": None, "chosen_on": None}
    summary["ci95"] = _intervals(labels, probs, cfg, threshold_value, positive)
    rows = calibration.reliability(labels, probs, cfg.calibration_bins, positive=positive)
    summary["calibration"] = {**calibration.calibration_errors(rows),
                              "bins": cfg.calibration_bins,
                              "probability": ("positive class" if positive is not None
                                              else "top-label confidence")}
    summary["bootstrap"] = {"resamples": cfg.bootstrap, "seed": cfg.seed,
                            "level": bootstrap.LEVEL, "method": BOOTSTRAP_METHOD}
    return summary, rows


def _threshold(cfg: EvaluateParams, positive: int, val_labels: np.ndarray | None,
               val_probs: np.ndarray | None) -> dict:
    """The threshold of class ``positive``: chosen on the validation split by the rule of
    ``cfg.threshold``, or the number it gives."""
    if isinstance(cfg.threshold, str):
        if val_labels is None or val_probs is None:
            raise ValueError(f"threshold rule {cfg.threshold!r} needs validation data")
        chosen = metrics.choose_threshold(np.asarray(val_labels) == positive,
                                          np.asarray(val_probs)[:, positive],
                                          cfg.threshold, cfg.target_sensitivity)
        chosen_on = "val"
    else:
        chosen = {"rule": "fixed", "value": float(cfg.threshold), "fallback": None}
        chosen_on = "params"
    if chosen_on == "val" and cfg.split == "val":
        warnings.warn("the threshold is chosen on and applied to the validation split: "
                      "its figures are optimistic", stacklevel=3)
    return {
        "rule": chosen["rule"],
        "value": chosen["value"],
        "chosen_on": chosen_on,
        "target_sensitivity": (cfg.target_sensitivity
                               if chosen["rule"] == "target_sensitivity" else None),
        "val_sensitivity": chosen.get("val_sensitivity"),
        "val_specificity": chosen.get("val_specificity"),
        "fallback": chosen["fallback"],
    }


def _intervals(labels: np.ndarray, probs: np.ndarray, cfg: EvaluateParams,
               threshold: float | None, positive: int | None) -> dict | None:
    """95% bootstrap intervals at argmax / 0.5 and, with a positive class, at
    ``threshold``."""
    if cfg.bootstrap <= 0:
        return None
    rules = {"default": None}
    if threshold is not None:
        rules["at_threshold"] = threshold
    ci = bootstrap.bootstrap_intervals(labels, probs, n_resamples=cfg.bootstrap,
                                       seed=cfg.seed, thresholds=rules, positive=positive)
    out = {"roc_auc": ci["roc_auc"], **{k: ci[f"default.{k}"] for k in CI_FIGURES}}
    if threshold is not None:
        out["at_threshold"] = {k: ci[f"at_threshold.{k}"] for k in CI_FIGURES}
    for name, interval in ci.items():
        if interval["dropped"]:
            log.info("bootstrap: %s undefined in %d of %d resamples (dropped)", name,
                     interval["dropped"], cfg.bootstrap)
    return out


def predictions_table(ids: list[str], labels: np.ndarray, probs: np.ndarray, task: Task,
                      summary: dict) -> pd.DataFrame:
    """One row per image: true and predicted class (at 0.5 / argmax and at the chosen
    threshold) and the probabilities."""
    classes, positive = task.classes, task.positive_index
    threshold = summary["threshold"]["value"]
    decided = metrics.decide(probs, positive=positive)  # at 0.5, or the argmax
    at_threshold = metrics.decide(probs, threshold, positive=positive)
    pred = pd.DataFrame({"id": ids,
                         "actual": [classes[k] for k in labels],
                         "predicted": [classes[k] for k in decided],
                         "predicted_at_threshold": [classes[k] for k in at_threshold]})
    for k, name in enumerate(classes):
        pred[f"p_{name}"] = probs[:, k].round(6)
    return pred


def gradcam_cases(labels: np.ndarray, probs: np.ndarray, task: Task, ids: list[str],
                  summary: dict, cfg: EvaluateParams) -> list[gradcam.Case]:
    """The seeded sample of images to explain, at the decisions the metrics report."""
    positive = task.positive_index
    decided = metrics.decide(probs, summary["threshold"]["value"], positive=positive)
    return gradcam.single_label_cases(labels, probs, decided, task.classes, ids, cfg.gradcam,
                                      cfg.seed, positive=positive)


def curves(labels: np.ndarray, probs: np.ndarray, task: Task
           ) -> tuple[list[dict], list[dict]]:
    """ROC and precision-recall points: the positive class's, or one-vs-rest per class."""
    positive = task.positive_index
    return (metrics.roc_points(labels, probs, task.classes, positive=positive),
            metrics.pr_points(labels, probs, task.classes, positive=positive))


def render(summary: dict, *, model: str, model_sha256: str, plots: dict[str, str],
           reliability: list[dict] | None = None) -> str:
    """The report. ``plots`` maps a plot title to a path relative to the report;
    ``reliability`` (rows of :func:`medpipe.evaluation.calibration.reliability`) adds a
    bin table."""
    s = summary
    lines = [
        f"# Evaluation on the {s['split']} split",
        "",
        f"Model `{model}` (sha256 `{model_sha256[:12]}`), {s['n']} cases: "
        + ", ".join(f"{name} {c['support']}" for name, c in s["per_class"].items()) + ".",
    ] + tta_line(s)
    if "positive_class" in s:
        lines += ["", f"Positive class: **{s['positive_class']}**. Sensitivity, specificity, "
                  "PPV, NPV and F1 are those of the positive class."]
    else:
        lines += ["", "Decision: argmax. Overall sensitivity, specificity, PPV, NPV and F1 "
                  "are macro means over the classes."]
    lines += ["", "## Decision threshold", "", *_threshold_lines(s)]
    lines += ["", "## Metrics", "", *_metric_lines(s)]
    return "\n".join(lines + tail(s, plots, reliability)) + "\n"


def _threshold_lines(s: dict) -> list[str]:
    thr = s["threshold"]
    if "positive_class" not in s:
        return ["Multi-class task: each case gets its most probable class (argmax)."]
    where = {"val": "on the validation split", "params": ""}[thr["chosen_on"]]
    lines = [f"A case is called {s['positive_class']} when p({s['positive_class']}) "
             f">= **{thr['value']:.4f}**, chosen {where} by "
             f"{RULES[thr['rule']]}".rstrip() + "."]
    if thr["rule"] == "target_sensitivity":
        lines.append(f"Target sensitivity: {thr['target_sensitivity']}.")
    if thr["chosen_on"] == "val":
        lines.append(f"On the validation split it gives sensitivity "
                     f"{fmt(thr['val_sensitivity'])} and specificity "
                     f"{fmt(thr['val_specificity'])}; it is applied unchanged to the "
                     f"{s['split']} split.")
    if thr.get("fallback"):
        lines.append(f"**Fallback:** {thr['fallback']}; 0.5 was used.")
    return lines


def _metric_lines(s: dict) -> list[str]:
    binary, ci, thr, boot = "positive_class" in s, s.get("ci95") or {}, s["threshold"], \
        s["bootstrap"]
    lines = [f"ROC AUC: **{with_ci(s['roc_auc'], ci.get('roc_auc'))}**", ""]
    if binary:
        at, ci_at = s["at_threshold"], ci.get("at_threshold", {})
        lines += [f"| metric | threshold {thr['value']:.4f} ({thr['rule']}) | threshold 0.5 |",
                  "|---|---|---|"]
        lines += [f"| {name} | {with_ci(at[key], ci_at.get(key))} "
                  f"| {with_ci(s[key], ci.get(key))} |" for key, name in NAMES.items()]
    else:
        lines += ["| metric | argmax |", "|---|---|"]
        lines += [f"| {name} | {with_ci(s[key], ci.get(key))} |" for key, name in NAMES.items()]
    lines.append("")
    if ci:
        lines.append(f"In brackets: 95% bootstrap confidence intervals ({boot['method']}; "
                     f"{boot['resamples']} resamples, seed {boot['seed']}).")
        dropped = {k: v["dropped"] for k, v in _flat(ci).items() if v["dropped"]}
        if dropped:
            lines.append("Resamples dropped where a metric was undefined: " + ", ".join(
                f"{k} {n}" for k, n in dropped.items()) + ".")
    else:
        lines.append("No confidence intervals (`evaluate.bootstrap: 0`).")
    per_class = s["at_threshold"]["per_class"] if binary else s["per_class"]
    rule = f"threshold {thr['value']:.4f}" if binary else "argmax"
    lines += ["", f"### Per class ({rule}, one-vs-rest)", "",
              "| class | support | sensitivity | specificity | PPV | NPV | F1 |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {c['support']} | {fmt(c['sensitivity'])} | "
              f"{fmt(c['specificity'])} | {fmt(c['ppv'])} | {fmt(c['npv'])} | "
              f"{fmt(c['f1'])} |" for name, c in per_class.items()]
    return lines


def _flat(ci: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for key, value in ci.items():
        if "low" in value:
            out[prefix + key] = value
        else:
            out.update(_flat(value, f"{prefix}{key}."))
    return out


def headline(summary: dict) -> str:
    """The one-line result the evaluate stage logs."""
    line = (f"{summary['split']}: accuracy {summary['accuracy']:.4f}  balanced accuracy "
            f"{summary['balanced_accuracy']:.4f}  ROC AUC {summary['roc_auc']:.4f}")
    if "at_threshold" in summary:
        at, thr = summary["at_threshold"], summary["threshold"]
        line += (f"; at threshold {thr['value']:.4f} ({thr['rule']}): sensitivity "
                 f"{at['sensitivity']:.4f}  specificity {at['specificity']:.4f}")
    return line


def group_figures(labels: np.ndarray, probs: np.ndarray, task: Task, summary: dict,
                  cfg: EvaluateParams) -> dict:
    """One subgroup's figures at the decisions of the whole split (the chosen threshold,
    or argmax): cases, AUC, accuracy, sensitivity and specificity (the positive class's,
    or without one macro means and per class), with bootstrap intervals; ``resampled`` holds
    the resampled values that the intervals of differences between groups are taken from."""
    threshold, positive = summary["threshold"]["value"], task.positive_index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small group may lack a class: NaN, not noise
        rep = metrics.classification_report(labels, probs, task.classes, threshold,
                                            positive=positive)
        values = (bootstrap.bootstrap_values(labels, probs, n_resamples=cfg.bootstrap,
                                             seed=cfg.seed, thresholds={"at": threshold},
                                             positive=positive)
                  if cfg.bootstrap > 0 else {})
    keys = ("roc_auc", "accuracy", "sensitivity", "specificity")
    resampled = {k: values["roc_auc" if k == "roc_auc" else f"at.{k}"] for k in keys
                 if values}
    out = {"n": rep["n"], **{k: rep[k] for k in keys},
           "ci95": ({k: bootstrap.percentile_interval(v) for k, v in resampled.items()}
                    if resampled else None),
           "resampled": resampled}
    if positive is None:
        out["per_class"] = {name: {k: c[k] for k in ("support", "sensitivity", "specificity")}
                            for name, c in rep["per_class"].items()}
    return out
