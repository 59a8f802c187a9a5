"""The plan stage end to end on a tiny store, and train running the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from planstores import make_store

from medpipe import PipelineError
from medpipe.params.sections import AugmentParams, PlanParams, TrainParams
from medpipe.planning import recipe
from stages.plan import plan
from stages.train import train


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """60 images of 16 px, 2 : 1 normal to opacity."""
    return make_store(tmp_path_factory.mktemp("store"), [40, 20])


def run_plan(store: Path, out: Path, budget: float | None, steps: int = 2) -> dict:
    plan(PlanParams(budget_minutes=budget, timed_steps=steps), "cpu", store, None,
         out / "plan.yaml", out / "plan.json")
    return yaml.safe_load((out / "plan.yaml").read_text())


def test_no_budget_writes_an_empty_plan(tiny_store, tmp_path) -> None:
    assert run_plan(tiny_store, tmp_path, None) == {}
    assert json.loads((tmp_path / "plan.json").read_text())["planned"] is False


def test_two_plans_of_one_store_agree_and_train_runs_it(tiny_store, tmp_path) -> None:
    # A budget every candidate fits: the costliest is chosen, epochs capped at 30.
    first = run_plan(tiny_store, tmp_path / "a", 30)
    assert first == run_plan(tiny_store, tmp_path / "b", 30)
    report = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert report["chosen"] == "resnet18 small stem at 16 px"
    assert all(c["reason"] for c in report["choices"].values())
    assert report["fingerprint"]["train_counts"] == {"normal": 24, "opacity": 12}

    first["train"].update(epochs=1, warmup_epochs=0.5)  # a test-sized run of the plan
    first["prepare"]["image_size"] = 24  # and a resize inside the model
    applied = recipe.apply(first, TrainParams(device="cpu"), AugmentParams())
    summary = train(applied.train, applied.augment, tiny_store, tmp_path / "model.pt",
                    tmp_path / "train.json", plan=applied)
    assert summary["model"] == "resnet18" and summary["plan_input_size"] == 24
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["arch"]["input_size"] == 24 and ckpt["arch"]["image_size"] == 16


def test_a_budget_too_small_is_one_line(tiny_store, tmp_path) -> None:
    with pytest.raises(PipelineError, match="'plan.budget_minutes' 1e-05 is too small"):
        run_plan(tiny_store, tmp_path, 1e-5)


def test_a_store_too_small_is_one_line(tmp_path) -> None:
    store = make_store(tmp_path / "small", [30, 9])  # 5 opacity images in train
    with pytest.raises(PipelineError, match="class 'opacity' has 5 training images"):
        run_plan(store, tmp_path, 5)
