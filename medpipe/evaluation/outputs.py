"""The files of DVC's plots the evaluate stage writes (the curves, the reliability rows, the
per-image predictions) and the report's links to them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from medpipe.utils.files import atomic_path

PLOT_FILES = {  # title in the report -> file under the plots directory
    "ROC curve": "roc.json",
    "Precision-recall curve": "pr.json",
    "Reliability diagram": "reliability.json",
    "Predictions (confusion matrices)": "predictions.csv",
    "Subgroups (evaluate.groups)": "groups.json",
}


def write_plot_data(plots_dir: Path, roc: list[dict], pr: list[dict], reliability: list[dict],
                    predictions: pd.DataFrame, groups: list[dict] | None = None) -> None:
    """The files the plots of dvc.yaml read, written together (atomically); ``groups``:
    the subgroup rows (an empty list without ``evaluate.groups``)."""
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, rows in [("roc.json", roc), ("pr.json", pr),
                           ("reliability.json", [{**r, "perfect": r["mean_probability"]}
                                                 for r in reliability]),
                           ("groups.json", groups or [])]:
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
