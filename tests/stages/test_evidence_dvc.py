"""Cross-validation and external test sets with real `dvc`: what each change reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import edit_params, sh, stages_run

pytestmark = pytest.mark.slow


def test_adding_an_external_set_runs_only_its_stage(reproduced: Path) -> None:
    project = reproduced
    site_b = {"source": "synthetic", "seed": 7, "n_per_class": 12, "path": "data/external"}
    edit_params(project, external={"site_b": site_b})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["external@site_b"]
    summary = json.loads((project / "metrics/external/site_b/evaluate_detail.json").read_text())
    assert summary["n"] == 24
    internal = json.loads((project / "metrics/evaluate.json").read_text())
    assert summary["threshold"]["value"] == internal["threshold"]
    prepared = json.loads((project / "metrics/external/site_b/prepare.json").read_text())
    assert prepared["test_images"] == 24
    edit_params(project, external={"site_b": site_b, "site_c": {**site_b, "seed": 8}})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["external@site_c"]
    shown = sh("dvc", "metrics", "show", "--json", cwd=project).stdout
    assert "metrics/external/site_c/evaluate.json" in shown


def test_folds_train_evaluate_and_rerun_only_when_their_inputs_change(reproduced: Path) -> None:
    project = reproduced
    edit_params(project, prepare={"folds": 3})
    ran = stages_run(sh("dvc", "repro", cwd=project).stdout)
    assert ran[0] == "prepare" and "crossval" in ran and ran[-1] == "evaluate"
    assert sorted(p.name for p in (project / "models/folds").glob("fold_*.pt")) == [
        "fold_0.pt", "fold_1.pt", "fold_2.pt"]
    summary = json.loads((project / "metrics/evaluate_detail.json").read_text())
    assert summary["folds"]["k"] == 3 and summary["ensemble"]["members"] == 3
    headline = json.loads((project / "metrics/evaluate.json").read_text())
    assert headline["ensemble_roc_auc"] == summary["ensemble"]["roc_auc"]
    assert headline["folds_roc_auc_mean"] == summary["folds"]["mean"]["test"]["roc_auc"]
    crossval = json.loads((project / "metrics/crossval.json").read_text())
    assert crossval["trained"] == 3 and "val_auc_sd" in crossval
    assert "Data and pipelines are up to date" in sh("dvc", "repro", cwd=project).stdout
    edit_params(project, evaluate={"batch_size": 17})
    assert stages_run(sh("dvc", "repro", cwd=project).stdout) == ["evaluate"]
    edit_params(project, prepare={"folds": 0})
    sh("dvc", "repro", cwd=project)
    assert not list((project / "models/folds").glob("fold_*"))
    assert "folds" not in json.loads((project / "metrics/evaluate_detail.json").read_text())
    assert "ensemble_roc_auc" not in json.loads((project / "metrics/evaluate.json").read_text())
