"""The evaluate stage under real `dvc`: plots render, report, evaluate keys rerun only it,
and a failed or killed run loses no earlier result."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Baseline, edit_params, sh, stages_run, tool_env

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
    summary = json.loads((project / "metrics/evaluate_detail.json").read_text())
    assert summary["threshold"]["rule"] == "youden" and summary["threshold"]["chosen_on"] == "val"
    assert summary["bootstrap"]["resamples"] == 1000
    assert {"roc_auc", "accuracy", "sensitivity", "specificity"} <= set(summary["ci95"])
    headline = json.loads((project / "metrics/evaluate.json").read_text())
    assert headline["threshold"] == summary["threshold"]["value"]
    assert headline["roc_auc_low"] == summary["ci95"]["roc_auc"]["low"]
    # The headline is a metric in git (for `dvc metrics diff`); the detail file and the
    # report are DVC-cached, so `dvc checkout` can bring them back after a failed run.
    tracked = sh("git", "ls-files", cwd=project).stdout.split()
    assert "metrics/evaluate.json" in tracked
    for cached in ("metrics/report.md", "metrics/evaluate_detail.json"):
        assert cached not in tracked
        sh("git", "check-ignore", "-q", cached, cwd=project)


def test_evaluate_keys_rerun_only_evaluate(reproduced: Path) -> None:
    project = reproduced
    edit_params(project, evaluate={"threshold": 0.5, "bootstrap": 50, "gradcam": 0})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["evaluate"]
    assert list((project / "metrics/gradcam").iterdir()) == []  # declared, so still there
    summary = json.loads((project / "metrics/evaluate_detail.json").read_text())
    assert summary["threshold"]["value"] == 0.5 and summary["threshold"]["chosen_on"] == "params"
    assert summary["at_threshold"]["accuracy"] == summary["accuracy"]
    edit_params(project, evaluate={"threshold": "target_sensitivity",
                                   "target_sensitivity": 0.95})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["evaluate"]
    summary = json.loads((project / "metrics/evaluate_detail.json").read_text())
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
    assert not (project / "metrics/evaluate_detail.json").exists()


EVALUATE_OUTPUTS = ["metrics/evaluate.json", "metrics/evaluate_detail.json", "metrics/report.md",
                    "metrics/evaluate/roc.json", "metrics/evaluate/predictions.csv",
                    "metrics/gradcam"]


def snapshot(project: Path) -> dict[str, str]:
    """SHA-256 of every file of the evaluate stage's outputs, by path."""
    files = []
    for out in EVALUATE_OUTPUTS:
        path = project / out
        files += sorted(path.rglob("*")) if path.is_dir() else [path]
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


def assert_restorable(project: Path, before: dict[str, str]) -> None:
    """After a failed evaluate: `dvc checkout` brings back the cached outputs, and once the
    params are back, `dvc repro` restores the rest from the run cache without rerunning."""
    assert not (project / "metrics/report.md").exists()  # DVC removed it before running
    sh("dvc", "checkout", cwd=project)
    for out in ["metrics/report.md", "metrics/evaluate/roc.json"]:
        assert snapshot(project)[out] == before[out], out
    sh("git", "checkout", "params.yaml", cwd=project)
    out = sh("dvc", "repro", cwd=project).stdout
    assert stages_run(out) == [] and "Stage 'evaluate' is cached - skipping run" in out, out
    assert snapshot(project) == before
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=project).stdout


def test_failed_evaluate_loses_no_earlier_result(reproduced: Path) -> None:
    project = reproduced
    before = snapshot(project)
    assert "metrics/gradcam/00_" in " ".join(before)  # the heat maps are compared too
    edit_params(project, evaluate={"threshold": 1.5})
    assert sh("dvc", "repro", cwd=project, check=False).returncode != 0
    assert_restorable(project, before)


def test_killed_evaluate_loses_no_earlier_result(reproduced: Path) -> None:
    project = reproduced
    before = snapshot(project)
    # Enough resamples that the run is still busy when it is killed.
    edit_params(project, evaluate={"bootstrap": 200000})
    proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while (project / "metrics/report.md").exists():  # until DVC has removed the outputs
            assert proc.poll() is None, "dvc repro ended before it could be killed"
            assert time.monotonic() < deadline, "evaluate never started"
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None, "evaluate finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, as a crash would
        proc.wait()
    assert not (project / "metrics/evaluate.json").exists()
    assert_restorable(project, before)
