"""The evaluation of a multi-label task (any set of findings per image, a sigmoid each):
the summary, the per-image predictions, the curves, the Grad-CAM sample, the report.

Pure functions of labels and probabilities, as :mod:`medpipe.evaluation.multiclass`.
Layout of the summary (``metrics/evaluate_detail.json``; ``metrics/evaluate.json`` keeps
its headline figures, :mod:`medpipe.evaluation.headline`)::

    task, split, n, findings
    accuracy, exact_match, roc_auc (mean per-finding AUC), sensitivity, specificity, ppv,
    npv, f1 (macro means over the findings), per_label.<finding>.{auc, positives,
    negatives, sensitivity, specificity, ppv, npv, f1}      -> at probability 0.5
    threshold.{rule, chosen_on, target_sensitivity, per_label.<finding>.{value,
        val_sensitivity, val_specificity, fallback}}        -> one threshold per finding
    at_threshold.{accuracy, ..., per_label}                 -> at those thresholds
    ci95.roc_auc.{low, high, dropped}                       -> the mean AUC
    calibration.{ece, mce, bins, probability}, bootstrap.{...}
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from medpipe.evaluation import bootstrap, calibration, findings, gradcam, metrics
from medpipe.evaluation.report import NAMES, RULES, fmt, tail, tta_line, with_ci
from medpipe.params.sections import EvaluateParams
from medpipe.task import Task

BOOTSTRAP_METHOD = "percentile, images resampled with replacement"


def summarise(labels: np.ndarray, probs: np.ndarray, task: Task, cfg: EvaluateParams,
              val_labels: np.ndarray | None = None, val_probs: np.ndarray | None = None
              ) -> tuple[dict, list[dict]]:
    """The summary (module docstring) and the reliability-diagram rows.

    ``labels`` are multi-hot ``(N, K)``, ``probs`` one sigmoid per finding. Each finding
    gets its own threshold, chosen on the validation split by ``cfg.threshold`` (or the
    fixed number for all) and applied unchanged to ``labels``/``probs``. Calibration pools
    every (image, finding) pair: the finding's probability against its presence."""
    labels, names = np.asarray(labels), task.classes
    probs = np.asarray(probs, dtype=np.float64)
    summary: dict = {"task": "multilabel", "split": cfg.split, "n": int(len(labels)),
                     "findings": list(names)}
    aucs = findings.label_aucs(labels, probs, names)
    base = findings.report(labels, probs, names, aucs=aucs)
    summary.update({k: v for k, v in base.items() if k != "n"})
    summary["threshold"] = _thresholds(names, cfg, val_labels, val_probs)
    at = findings.report(labels, probs, names, thresholds_of(summary), aucs=aucs)
    summary["at_threshold"] = {k: v for k, v in at.items() if k not in ("n", "roc_auc")}

    summary["ci95"] = None
    if cfg.bootstrap > 0:
        summary["ci95"] = {"roc_auc": bootstrap.multilabel_auc_interval(
            labels, probs, n_resamples=cfg.bootstrap, seed=cfg.seed)}
    # Each (image, finding) pair as a two-class case: absent / present, present positive.
    flat = probs.reshape(-1)
    rows = calibration.reliability(labels.reshape(-1).astype(np.int64),
                                   np.stack([1.0 - flat, flat], axis=1), cfg.calibration_bins,
                                   positive=1)
    summary["calibration"] = {**calibration.calibration_errors(rows),
                              "bins": cfg.calibration_bins, "probability": "finding"}
    summary["bootstrap"] = {"resamples": cfg.bootstrap, "seed": cfg.seed,
                            "level": bootstrap.LEVEL, "method": BOOTSTRAP_METHOD}
    return summary, rows


def _thresholds(names: list[str], cfg: EvaluateParams, val_labels: np.ndarray | None,
                val_probs: np.ndarray | None) -> dict:
    """One threshold per finding, chosen on the validation split by the rule of
    ``cfg.threshold``, or the number it gives for all."""
    chosen_on = "val" if isinstance(cfg.threshold, str) else "params"
    if chosen_on == "val" and (val_labels is None or val_probs is None):
        raise ValueError(f"threshold rule {cfg.threshold!r} needs validation data")
    per_label = {}
    for k, name in enumerate(names):
        if chosen_on == "val":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                chosen = metrics.choose_threshold(np.asarray(val_labels)[:, k],
                                                  np.asarray(val_probs)[:, k], cfg.threshold,
                                                  cfg.target_sensitivity)
            for w in caught:  # say which finding the fallback is for
                warnings.warn(f"finding '{name}': {w.message}", stacklevel=3)
        else:
            chosen = {"value": float(cfg.threshold), "fallback": None}
        per_label[name] = {"value": chosen["value"],
                           "val_sensitivity": chosen.get("val_sensitivity"),
                           "val_specificity": chosen.get("val_specificity"),
                           "fallback": chosen["fallback"]}
    if chosen_on == "val" and cfg.split == "val":
        warnings.warn("the thresholds are chosen on and applied to the validation split: "
                      "their figures are optimistic", stacklevel=3)
    return {
        "rule": cfg.threshold if isinstance(cfg.threshold, str) else "fixed",
        "chosen_on": chosen_on,
        "target_sensitivity": (cfg.target_sensitivity
                               if cfg.threshold == "target_sensitivity" else None),
        "per_label": per_label,
    }


def thresholds_of(summary: dict) -> np.ndarray:
    """The summary's per-finding thresholds, in finding order."""
    per_label = summary["threshold"]["per_label"]
    return np.array([per_label[name]["value"] for name in summary["findings"]])


def finding_sets(called: np.ndarray, names: list[str]) -> list[str]:
    """Each row's called findings joined by '|' ('none' for none): a multi-label image's
    "class" in the confusion-matrix plots."""
    return ["|".join(n for n, c in zip(names, row, strict=True) if c) or "none"
            for row in called]


def predictions_table(ids: list[str], labels: np.ndarray, probs: np.ndarray, task: Task,
                      summary: dict) -> pd.DataFrame:
    """One row per image: the finding sets (true, called at 0.5, called at the thresholds),
    then per finding its truth, probability and call at its threshold."""
    names = task.classes
    called = probs >= thresholds_of(summary)[None, :]
    pred = pd.DataFrame({"id": ids, "actual": finding_sets(labels == 1, names),
                         "predicted": finding_sets(probs >= 0.5, names),
                         "predicted_at_threshold": finding_sets(called, names)})
    for k, name in enumerate(names):
        pred[f"true_{name}"] = labels[:, k].astype(np.int64)
        pred[f"p_{name}"] = probs[:, k].round(6)
        pred[f"pred_{name}"] = called[:, k].astype(np.int64)
    return pred


def gradcam_cases(labels: np.ndarray, probs: np.ndarray, task: Task, ids: list[str],
                  summary: dict, cfg: EvaluateParams) -> list[gradcam.Case]:
    """The seeded sample of (image, finding) pairs to explain, at the thresholds."""
    return gradcam.multilabel_cases(labels, probs, thresholds_of(summary), task.classes, ids,
                                    cfg.gradcam, cfg.seed)


def curves(labels: np.ndarray, probs: np.ndarray, task: Task
           ) -> tuple[list[dict], list[dict]]:
    """ROC and precision-recall points per finding."""
    return findings.curves(labels, probs, task.classes)


def render(summary: dict, *, model: str, model_sha256: str, plots: dict[str, str],
           reliability: list[dict] | None = None) -> str:
    """The report: one row per finding."""
    s = summary
    lines = [
        f"# Evaluation on the {s['split']} split (multi-label)",
        "",
        f"Model `{model}` (sha256 `{model_sha256[:12]}`), {s['n']} images, "
        f"{len(s['findings'])} findings, each scored on its own (a sigmoid per finding).",
        *tta_line(s),
        "",
        "## Decision thresholds",
        "",
        *_threshold_lines(s),
        "", "## Metrics", "",
        *_metric_lines(s),
    ]
    return "\n".join(lines + tail(s, plots, reliability)) + "\n"


def _threshold_lines(s: dict) -> list[str]:
    thr = s["threshold"]
    if thr["chosen_on"] == "val":
        lines = [f"Each finding is called when its probability >= its own threshold, "
                 f"chosen on the validation split by {RULES[thr['rule']]}, and applied "
                 f"unchanged to the {s['split']} split."]
        if thr["rule"] == "target_sensitivity":
            lines.append(f"Target sensitivity: {thr['target_sensitivity']}.")
    else:
        value = next(iter(thr["per_label"].values()))["value"] if thr["per_label"] else 0.5
        lines = [f"Each finding is called when its probability >= {value} "
                 "(fixed in params.yaml)."]
    fallbacks = [f"{name} ({t['fallback']})" for name, t in thr["per_label"].items()
                 if t.get("fallback")]
    if fallbacks:
        lines.append("**Fallback to 0.5:** " + "; ".join(fallbacks) + ".")
    return lines


def _metric_lines(s: dict) -> list[str]:
    ci, thr, at = s.get("ci95") or {}, s["threshold"], s["at_threshold"]
    lines = [f"Mean ROC AUC over the findings: **{with_ci(s['roc_auc'], ci.get('roc_auc'))}**",
             "", "| metric | per-finding thresholds | threshold 0.5 |", "|---|---|---|"]
    for key, name in [("accuracy", "accuracy (all image-finding decisions)"),
                      ("exact_match", "exact match (every finding right)"),
                      *[(k, f"mean {v}") for k, v in NAMES.items()
                        if k not in ("accuracy", "balanced_accuracy")]]:
        lines.append(f"| {name} | {fmt(at[key])} | {fmt(s[key])} |")
    lines.append("")
    if ci:
        boot = s["bootstrap"]
        lines.append(f"In brackets: 95% bootstrap confidence interval ({boot['method']}; "
                     f"{boot['resamples']} resamples, seed {boot['seed']}).")
    else:
        lines.append("No confidence intervals (`evaluate.bootstrap: 0`).")
    lines += ["", "### Per finding", "",
              "| finding | positives | negatives | AUC | threshold | sensitivity | specificity "
              "| PPV | sensitivity at 0.5 | specificity at 0.5 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in s["per_label"].items():
        t, a = thr["per_label"][name], at["per_label"][name]
        lines.append(f"| {name} | {c['positives']} | {c['negatives']} | {fmt(c['auc'])} | "
                     f"{t['value']:.4f} | {fmt(a['sensitivity'])} | {fmt(a['specificity'])} | "
                     f"{fmt(a['ppv'])} | {fmt(c['sensitivity'])} | {fmt(c['specificity'])} |")
    lines += ["", "n/a: undefined on this split (a finding with no positive or no negative "
              "image has no AUC, and is left out of the means)."]
    return lines


def headline(summary: dict) -> str:
    """The one-line result the evaluate stage logs."""
    return (f"{summary['split']}: mean ROC AUC {summary['roc_auc']:.4f} over "
            f"{len(summary['findings'])} findings  accuracy {summary['accuracy']:.4f}  "
            f"exact match {summary['exact_match']:.4f}")


def group_figures(labels: np.ndarray, probs: np.ndarray, task: Task, summary: dict,
                  cfg: EvaluateParams) -> dict:
    """One subgroup's figures at the per-finding thresholds of the whole split: images,
    mean AUC (with its bootstrap interval; ``resampled`` its resampled values), accuracy
    and the mean sensitivity and specificity over the findings."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small group may lack a finding: NaN, not noise
        rep = findings.report(labels, probs, task.classes, thresholds_of(summary))
        resampled = ({"roc_auc": bootstrap.multilabel_auc_values(
            labels, probs, n_resamples=cfg.bootstrap, seed=cfg.seed)}
            if cfg.bootstrap > 0 and len(labels) else {})
    return {"n": rep["n"], **{k: rep[k] for k in ("roc_auc", "accuracy", "sensitivity",
                                                   "specificity")},
            "ci95": ({k: bootstrap.percentile_interval(v) for k, v in resampled.items()}
                     if resampled else None),
            "resampled": resampled}
