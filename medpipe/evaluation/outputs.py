"""What the evaluate stage writes besides the summary: the per-image predictions table,
the curves and reliability rows for DVC's plots, the Grad-CAM sample, the report's links."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.evaluation import gradcam, metrics
from medpipe.params.sections import EvaluateParams
from medpipe.utils.files import atomic_path

PLOT_FILES = {  # title in the report -> file under the plots directory
    "ROC curve": "roc.json",
    "Precision-recall curve": "pr.json",
    "Reliability diagram": "reliability.json",
    "Predictions (confusion matrices)": "predictions.csv",
}


def finding_sets(called: np.ndarray, names: list[str]) -> list[str]:
    """Each row's called findings joined by '|' ('none' for none): a multi-label image's
    "class" in the confusion-matrix plots."""
    return ["|".join(n for n, c in zip(names, row, strict=True) if c) or "none"
            for row in called]


def predictions_table(ids: list[str], labels: np.ndarray, probs: np.ndarray,
                      classes: list[str], summary: dict) -> pd.DataFrame:
    """One row per image: true and predicted class (at 0.5 and at the chosen threshold)
    and the probabilities; multi-label: the finding sets, then per finding its truth,
    probability and call at its threshold."""
    if summary.get("task") != "multilabel":
        threshold = summary["threshold"]["value"]
        pred = pd.DataFrame({"id": ids,
                             "actual": [classes[k] for k in labels],
                             "predicted": [classes[k] for k in metrics.decide(probs)],
                             "predicted_at_threshold": [classes[k] for k in
                                                        metrics.decide(probs, threshold)]})
        for k, name in enumerate(classes):
            pred[f"p_{name}"] = probs[:, k].round(6)
        return pred
    called = probs >= thresholds_of(summary)[None, :]
    pred = pd.DataFrame({"id": ids, "actual": finding_sets(labels == 1, classes),
                         "predicted": finding_sets(probs >= 0.5, classes),
                         "predicted_at_threshold": finding_sets(called, classes)})
    for k, name in enumerate(classes):
        pred[f"true_{name}"] = labels[:, k].astype(np.int64)
        pred[f"p_{name}"] = probs[:, k].round(6)
        pred[f"pred_{name}"] = called[:, k].astype(np.int64)
    return pred


def thresholds_of(summary: dict) -> np.ndarray:
    """A multi-label summary's per-finding thresholds, in finding order."""
    per_label = summary["threshold"]["per_label"]
    return np.array([per_label[name]["value"] for name in summary["findings"]])


def gradcam_cases(labels: np.ndarray, probs: np.ndarray, classes: list[str], ids: list[str],
                  summary: dict, cfg: EvaluateParams) -> list[gradcam.Case]:
    """The seeded sample of images to explain, at the decisions the metrics report."""
    if summary.get("task") == "multilabel":
        return gradcam.multilabel_cases(labels, probs, thresholds_of(summary), classes, ids,
                                        cfg.gradcam, cfg.seed)
    decided = metrics.decide(probs, summary["threshold"]["value"])
    return gradcam.single_label_cases(labels, probs, decided, classes, ids, cfg.gradcam,
                                      cfg.seed)


def curves(labels: np.ndarray, probs: np.ndarray, classes: list[str], multilabel: bool
           ) -> tuple[list[dict], list[dict]]:
    """ROC and precision-recall points, per class (or per finding)."""
    if multilabel:
        return metrics.multilabel_curves(labels, probs, classes)
    return metrics.roc_points(labels, probs, classes), metrics.pr_points(labels, probs, classes)


def write_plot_data(plots_dir: Path, roc: list[dict], pr: list[dict], reliability: list[dict],
                    predictions: pd.DataFrame) -> None:
    """The files the plots of dvc.yaml read, written together (atomically)."""
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, rows in [("roc.json", roc), ("pr.json", pr),
                           ("reliability.json", [{**r, "perfect": r["mean_probability"]}
                                                 for r in reliability])]:
            (tmp / name).write_text(json.dumps(rows, indent=1) + "\n")
        predictions.to_csv(tmp / "predictions.csv", index=False)


def report_links(report_path: Path, plots_dir: Path, gradcam_dir: Path | None) -> dict[str, str]:
    """Plot title -> path relative to the report."""
    rel = Path(os.path.relpath(plots_dir, report_path.parent))
    links = {title: (rel / name).as_posix() for title, name in PLOT_FILES.items()}
    if gradcam_dir is not None:
        links["Grad-CAM heat maps (PNG)"] = Path(
            os.path.relpath(gradcam_dir, report_path.parent)).as_posix()
    return links
