"""The plan stage end to end on a tiny store: real trials on the validation split, and
train running the plan."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from planstores import make_store

from medpipe import PipelineError
from medpipe.data import store as stores
from medpipe.params.sections import AugmentParams, PlanParams, TrainParams
from medpipe.planning import rates, recipe
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
    assert json.loads((tmp_path / "plan_detail.json").read_text())["planned"] is False
    assert json.loads((tmp_path / "plan.json").read_text()) == {"planned": 0}


def test_two_plans_of_one_store_agree_and_train_runs_it(tiny_store, tmp_path,
                                                        monkeypatch) -> None:
    fake_rates(monkeypatch)
    first = run_plan(tiny_store, tmp_path / "a", 0.05)
    assert first == run_plan(tiny_store, tmp_path / "b", 0.05)  # trials are deterministic
    report = json.loads((tmp_path / "a" / "plan_detail.json").read_text())
    trials = report["trials"]
    assert report["search"]["configurations"] == len([t for t in trials if t["rung"] == 0])
    assert [t["winner"] for t in trials].count(True) == 1
    winner = trials[report["winner"]]
    assert winner["winner"] and winner["rung"] == max(t["rung"] for t in trials)
    assert winner["score"] == max(t["score"] for t in trials if t["rung"] == winner["rung"])
    assert first["train"]["lr"] == winner["lr"] and first["train"]["model"] == winner["model"]
    assert trials[0]["origin"].startswith("rules") and trials[1]["origin"] == (
        "params.yaml's default")
    assert all(math.isfinite(t["val_auc"]) and t["planned_seconds"] > 0 for t in trials)
    assert report["search"]["planned_seconds"] <= round(0.05 * 60 * 0.85, 1)
    assert all(c["reason"] for c in report["choices"].values())
    assert report["fingerprint"]["train_counts"] == {"normal": 24, "opacity": 12}
    assert json.loads((tmp_path / "a" / "plan.json").read_text()) == {
        "planned": 1, "budget_minutes": 0.05,
        "configurations": report["search"]["configurations"], "trials": len(trials),
        **{f"winner_{k}": winner[k] for k in ("val_auc", "val_accuracy", "score")}}

    first["train"].update(epochs=1, warmup_epochs=0.5)  # a test-sized run of the plan
    first["prepare"]["image_size"] = 24  # and a resize inside the model
    applied = recipe.apply(first, TrainParams(device="cpu"), AugmentParams())
    summary = train(applied.train, applied.augment, tiny_store, tmp_path / "model.pt",
                    tmp_path / "train.json", plan=applied)
    assert summary["model"] == winner["model"] and summary["plan_input_size"] == 24
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["arch"]["input_size"] == 24 and ckpt["arch"]["image_size"] == 16


def test_the_plan_never_reads_the_test_split(tiny_store, tmp_path, monkeypatch) -> None:
    fake_rates(monkeypatch)
    blind = tmp_path / "store"
    shutil.copytree(tiny_store, blind)
    for path in (stores.images_path(blind, "test"), stores.labels_path(blind, "test")):
        path.unlink()
    assert run_plan(blind, tmp_path, 0.05) == run_plan(tiny_store, tmp_path / "full", 0.05)


def test_a_budget_too_small_is_one_line(tiny_store, tmp_path, monkeypatch) -> None:
    fake_rates(monkeypatch)
    with pytest.raises(PipelineError, match=r"'plan.budget_minutes' 0.001 is too small: 3 "
                       r"one-epoch trials of the cheapest model \(cnn at 16 px, 36 training "
                       r"images .*\) and the best one's 3 epochs need [\d.]+ minutes; set "
                       r"at least [\d.]+ \(stage plan\)"):
        run_plan(tiny_store, tmp_path, 0.001)


def test_a_store_too_small_is_one_line(tmp_path) -> None:
    store = make_store(tmp_path / "small", [30, 9])  # 5 opacity images in train
    with pytest.raises(PipelineError, match="class 'opacity' has 5 training images"):
        run_plan(store, tmp_path, 5)


def fake_rates(monkeypatch) -> list[str]:
    """Replace the timing of candidates by fixed rates (the real timing is
    tests/planning/test_rates.py's); returns the names of the candidates timed. Each is
    timed augmented and averaged, the costliest step its trials may take."""
    timed: list[str] = []

    def measure(candidate, cfg, aug, stats, train, val, data_dir, device, steps) -> float:
        assert aug.affine_p == 0.5 and cfg.ema > 0 and cfg.model == candidate.model
        timed.append(candidate.name)
        return {"cnn": 900.0}.get(candidate.model, 60.0) / (1 + candidate.input_size / 64)

    monkeypatch.setattr(rates, "measure", measure)
    return timed
