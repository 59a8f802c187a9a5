"""The whole pipeline on a multi-label CSV manifest with patient ids, under real DVC:
findings separated by `|` become a multi-label store split by patient, train learns a
sigmoid per finding, evaluate reports each finding, and the plots render."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import edit_params, make_project, sh, stages_run
from imagefiles import save

FINDINGS = ["effusion", "mass", "nodule"]  # the store sorts finding names
PLACES = {"effusion": (slice(14, 22), slice(6, 14)), "mass": (slice(2, 9), slice(2, 9)),
          "nodule": (slice(2, 9), slice(15, 22))}


@pytest.mark.slow
def test_multilabel_manifest_through_dvc(tmp_path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "chest"
    rows = []
    for p in range(80):  # 80 patients, 2 images each
        for k in range(2):
            present = [f for f in FINDINGS if rng.random() < 0.4]
            img = rng.integers(30, 130, (24, 24)).astype(np.uint8)
            for f in present:
                img[PLACES[f]] += 100
            name = f"images/p{p:02d}_{k}.png"
            save(root / name, img)
            rows.append({"path": name, "label": "|".join(present) or "No Finding",
                         "patient_id": f"P{p:02d}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)

    repo = make_project(tmp_path / "project")
    edit_params(repo, data={"source": "csv", "path": str(root), "name": "labels.csv",
                            "classes": None},
                prepare={"image_size": 24, "workers": 1},
                train={"epochs": 6, "batch_size": 32, "lr": 0.01, "dropout": 0.0,
                       "schedule": "constant", "warmup_epochs": 0},
                evaluate={"bootstrap": 50, "gradcam": 2})
    ran = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    assert ran == ["download", "plan", "prepare", "pretrained", "train", "crossval",
                   "evaluate"]

    stats = json.loads((repo / "data/prepared/stats.json").read_text())
    assert stats["task"] == "multilabel" and stats["classes"] == FINDINGS
    assert np.load(repo / "data/prepared/train_labels.npy").shape[1] == 3

    manifest = pd.read_csv(repo / "data/prepared/manifest.csv")
    patient = manifest["source_id"].str.extract(r"p(\d+)_")[0]
    assert manifest.groupby(patient)["split"].nunique().max() == 1  # no patient in two

    report = json.loads((repo / "metrics/evaluate_detail.json").read_text())
    assert report["task"] == "multilabel" and report["findings"] == FINDINGS
    headline = json.loads((repo / "metrics/evaluate.json").read_text())
    assert headline["roc_auc"] == report["roc_auc"]
    assert headline["exact_match"] == report["at_threshold"]["exact_match"]
    aucs = [report["per_label"][f]["auc"] for f in FINDINGS]
    assert report["roc_auc"] == pytest.approx(np.mean(aucs))
    assert report["roc_auc"] > 0.75  # each finding is a visible blob: learnable
    assert set(report["threshold"]["per_label"]) == set(FINDINGS)

    predictions = pd.read_csv(repo / "metrics/evaluate/predictions.csv")
    for f in FINDINGS:
        assert {f"true_{f}", f"p_{f}", f"pred_{f}"} <= set(predictions.columns)
    assert len(list((repo / "metrics/gradcam").glob("*.png"))) == 2
    shown = sh("dvc", "plots", "show", "--json", cwd=repo).stdout
    assert "Precision-recall (test)" in shown
