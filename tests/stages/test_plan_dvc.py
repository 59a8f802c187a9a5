"""The plan stage with real `dvc`: a budget plans and trains the plan, keys set in
params.yaml win, the plan is cached, and a new budget replans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import edit_params, sh, stages_run

pytestmark = pytest.mark.slow


def test_a_budget_plans_and_train_runs_the_plan(reproduced: Path) -> None:
    project = reproduced
    out = sh("dvc", "exp", "run", "-S", "plan.budget_minutes=2", "-S", "plan.timed_steps=1",
             cwd=project).stdout
    # The plan comes before the store: the plan and every stage that reads it run.
    assert stages_run(out) == ["plan", "prepare", "train", "crossval", "evaluate"], out
    report = json.loads((project / "metrics/plan_detail.json").read_text())
    assert report["planned"] and report["budget_minutes"] == 2
    assert len(report["trials"]) >= 3 and report["trials"][report["winner"]]["winner"]
    headline = json.loads((project / "metrics/plan.json").read_text())
    assert headline["planned"] == 1 and headline["trials"] == len(report["trials"])
    assert headline["winner_score"] == report["trials"][report["winner"]]["score"]
    planned = yaml.safe_load((project / "data/plan.yaml").read_text())
    train = json.loads((project / "metrics/train_detail.json").read_text())
    # The test project sets epochs, batch size and schedule itself: those keys win.
    assert {"train.epochs", "train.batch_size", "train.schedule"} <= set(
        train["plan_overridden"])
    assert "train.lr" in train["plan_applied"] and train["model"] == planned["train"]["model"]
    assert train["epochs"] == 2
    # The test project sets prepare.image_size: the store keeps it, and says so.
    prepared = json.loads((project / "metrics/prepare_detail.json").read_text())
    assert prepared["image_size"] == 32 and prepared["plan_overridden"] == [
        "prepare.image_size"]
    # The planned keys are params DVC tracks: they show in `dvc params diff`.
    diff = sh("dvc", "params", "diff", "--all", cwd=project).stdout
    assert "data/plan.yaml" in diff and "train.lr" in diff, diff

    # Cached: nothing reruns. A new budget replans.
    assert "Data and pipelines are up to date" in sh("dvc", "repro", cwd=project).stdout
    edit_params(project, plan={"budget_minutes": 2.5, "timed_steps": 1})
    assert stages_run(sh("dvc", "repro", "plan", cwd=project).stdout) == ["plan"]
    assert json.loads((project / "metrics/plan.json").read_text())["budget_minutes"] == 2.5
