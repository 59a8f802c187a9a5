"""The evaluate stage under real `dvc`: plots render, report, evaluate keys rerun only it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Baseline, edit_params, sh, stages_run

pytestmark = pytest.mark.slow

PLOTS = ["Loss", "Accuracy", "Validation AUC", "Confusion matrix (test)",
         "ROC per class (test)", "Precision-recall (test)", "Confusion matrix at threshold (test)",
         "Confusion matrix at threshold, normalised per actual class (test)",
         "Reliability diagram (test)"]


def test_every_declared_plot_renders(baseline: Baseline) -> None:
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=baseline.path).stdout)
    assert not shown.get("errors"), shown.get("errors")
    data = shown["data"]
    for name in PLOTS:
        assert name in data and data[name], name
        values = data[name][0]["content"]["data"]["values"]
        assert values, name  # the plot has points, not just a title
    roc = data["ROC per class (test)"][0]["content"]
    assert roc["encoding"]["color"]["field"] == "class"  # the by-class template is used
    assert "ROC (test)" not in data  # the old single-line ROC of every class at once
    maps = sorted(name for name in data if name.startswith("metrics/gradcam/"))
    on_disk = sorted(p.name for p in (baseline.path / "metrics/gradcam").iterdir())
    assert [m.rsplit("/", 1)[1] for m in maps] == on_disk and len(maps) == 8
    assert all(data[m][0]["type"] == "image" for m in maps)
    assert {m.split("/")[-1].split("_")[1] for m in maps} == {"correct", "wrong"}


def test_report_and_summary_are_written(baseline: Baseline) -> None:
    project = baseline.path
    text = (project / "metrics/report.md").read_text()
    assert text.startswith("# Evaluation on the test split") and "## Calibration" in text
    summary = json.loads((project / "metrics/evaluate.json").read_text())
    assert summary["threshold"]["rule"] == "youden" and summary["threshold"]["chosen_on"] == "val"
    assert summary["bootstrap"]["resamples"] == 1000
    assert {"roc_auc", "accuracy", "sensitivity", "specificity"} <= set(summary["ci95"])
    # Not in the DVC cache (cache: false): git keeps it, so a pull request shows it.
    assert "metrics/report.md" in sh("git", "ls-files", cwd=project).stdout


def test_evaluate_keys_rerun_only_evaluate(reproduced: Path) -> None:
    project = reproduced
    edit_params(project, evaluate={"threshold": 0.5, "bootstrap": 50, "gradcam": 0})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["evaluate"]
    assert list((project / "metrics/gradcam").iterdir()) == []  # declared, so still there
    summary = json.loads((project / "metrics/evaluate.json").read_text())
    assert summary["threshold"]["value"] == 0.5 and summary["threshold"]["chosen_on"] == "params"
    assert summary["at_threshold"]["accuracy"] == summary["accuracy"]
    edit_params(project, evaluate={"threshold": "target_sensitivity",
                                   "target_sensitivity": 0.95})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["evaluate"]
    summary = json.loads((project / "metrics/evaluate.json").read_text())
    assert summary["threshold"]["rule"] == "target_sensitivity"
    assert summary["threshold"]["val_sensitivity"] >= 0.95


def test_bad_evaluate_value_fails_in_one_line(reproduced: Path) -> None:
    project = reproduced
    edit_params(project, evaluate={"threshold": 1.5})
    proc = sh("dvc", "repro", cwd=project, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "'evaluate.threshold'" in errors[0] and "(stage evaluate)" in errors[0]
    assert not (project / "metrics/evaluate.json").exists()
