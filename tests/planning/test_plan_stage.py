"""The plan stage end to end on a tiny raw dataset: its own store of the train and val
splits, real trials on the validation split, and prepare and train running the plan."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from planstores import PREPARE, make_raw

from medpipe import PipelineError
from medpipe.data import prepare as prepare_module
from medpipe.data import store as stores
from medpipe.data.sources import registry
from medpipe.params.sections import AugmentParams, PlanParams, TrainParams
from medpipe.planning import planner, rates, recipe
from stages.plan import plan
from stages.prepare import prepare
from stages.train import train


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory) -> Path:
    """60 images of 24 px, 2 : 1 normal to opacity."""
    return make_raw(tmp_path_factory.mktemp("raw") / "raw", [40, 20])


def run_plan(raw: Path, out: Path, budget: float | None, steps: int = 2) -> dict:
    plan(PlanParams(budget_minutes=budget, timed_steps=steps), PREPARE, "cpu", raw,
         out / "plan.yaml", out / "plan.json")
    return yaml.safe_load((out / "plan.yaml").read_text())


def test_no_budget_writes_an_empty_plan(tiny_raw, tmp_path) -> None:
    assert run_plan(tiny_raw, tmp_path, None) == {"planned": False}
    assert json.loads((tmp_path / "plan_detail.json").read_text())["planned"] is False
    assert json.loads((tmp_path / "plan.json").read_text()) == {"planned": 0}


def test_two_plans_agree_and_prepare_and_train_run_the_plan(tiny_raw, tmp_path,
                                                            monkeypatch) -> None:
    fake_rates(monkeypatch)
    first = run_plan(tiny_raw, tmp_path / "a", 0.05)
    assert first == run_plan(tiny_raw, tmp_path / "b", 0.05)  # trials are deterministic
    report = json.loads((tmp_path / "a" / "plan_detail.json").read_text())
    trials = report["trials"]
    assert report["search"]["configurations"] == len([t for t in trials if t["rung"] == 0])
    assert [t["winner"] for t in trials].count(True) == 1
    winner = trials[report["winner"]]
    assert winner["winner"] and winner["rung"] == max(t["rung"] for t in trials)
    assert winner["score"] == max(t["score"] for t in trials if t["rung"] == winner["rung"])
    assert first["train"]["lr"] == winner["lr"] and first["train"]["model"] == winner["model"]
    assert first["prepare"]["image_size"] == winner["input_size"]
    assert trials[0]["origin"].startswith("rules") and trials[1]["origin"] == (
        "params.yaml's default")
    assert all(math.isfinite(t["val_auc"]) and t["planned_seconds"] > 0 for t in trials)
    overhead = report["overhead"]["share_of_budget"]
    assert report["search"]["planned_seconds"] <= round(0.05 * 60 * (0.9 - overhead), 1)
    assert all(c["reason"] for c in report["choices"].values())
    assert report["fingerprint"]["train_counts"] == {"normal": 24, "opacity": 12}
    assert report["fingerprint"]["native_size"] == 24
    assert json.loads((tmp_path / "a" / "plan.json").read_text()) == {
        "planned": 1, "budget_minutes": 0.05,
        "configurations": report["search"]["configurations"], "trials": len(trials),
        **{f"winner_{k}": winner[k] for k in ("val_auc", "val_balanced_accuracy", "score")}}

    first["train"].update(epochs=1, warmup_epochs=0.5)  # a test-sized run of the plan
    first["prepare"]["image_size"] = 32  # the store is made at the planned side
    cfg, record = recipe.apply_prepare(first, PREPARE.__class__(**{
        **PREPARE.__dict__, "image_size": 64}))  # params.yaml's default side
    assert cfg.image_size == 32 and record["plan_applied"] == ["prepare.image_size"]
    store = tmp_path / "prepared"
    prepare(cfg, tiny_raw, store, tmp_path / "prepare.json", plan=record)
    assert stores.read_stats(store)["image_size"] == 32
    assert json.loads((tmp_path / "prepare_detail.json").read_text())["plan_applied"] == [
        "prepare.image_size"]
    applied = recipe.apply(first, TrainParams(device="cpu"), AugmentParams())
    summary = train(applied.train, applied.augment, store, tmp_path / "model.pt",
                    tmp_path / "train.json", plan=applied)
    assert summary["model"] == winner["model"] and "train.lr" in summary["plan_applied"]
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["arch"]["image_size"] == 32 and "input_size" not in ckpt["arch"]


def test_a_side_set_in_params_yaml_is_the_one_side_planned(tiny_raw, tmp_path,
                                                          monkeypatch) -> None:
    """prepare.image_size set (16 here) is kept by the prepare stage over a planned side,
    so every candidate is at 16 px; left at its default (64), the plan searches the sides
    the 24 px source allows."""
    timed = fake_rates(monkeypatch)
    assert run_plan(tiny_raw, tmp_path / "set", 0.05)["prepare"]["image_size"] == 16
    report = json.loads((tmp_path / "set" / "plan_detail.json").read_text())
    assert report["fingerprint"]["side_set"] is True
    assert {name.rsplit(" at ", 1)[1] for name in timed} == {"16 px"}
    timed.clear()
    plan(PlanParams(budget_minutes=0.05, timed_steps=2), replace(PREPARE, image_size=64),
         "cpu", tiny_raw, tmp_path / "default" / "plan.yaml", tmp_path / "default" / "p.json")
    assert len({name.rsplit(" at ", 1)[1] for name in timed}) >= 2  # 32 and 64 px here


def test_the_plan_never_reads_the_test_split(tiny_raw, tmp_path, monkeypatch) -> None:
    fake_rates(monkeypatch)
    raw = registry.read(tiny_raw)
    labels = np.asarray(raw.labels)
    test = prepare_module._split(raw, labels, raw.classes, PREPARE)["test"]
    blind = tmp_path / "raw"
    shutil.copytree(tiny_raw, blind)
    images = np.load(blind / "images.npy")
    images[test] = np.random.default_rng(1).integers(0, 256, images[test].shape)
    np.save(blind / "images.npy", images)
    assert run_plan(blind, tmp_path, 0.05) == run_plan(tiny_raw, tmp_path / "full", 0.05)


def test_a_budget_too_small_is_one_line(tiny_raw, tmp_path, monkeypatch) -> None:
    fake_rates(monkeypatch)
    with pytest.raises(PipelineError, match=r"'plan.budget_minutes' 0.001 is too small: 3 "
                       r"one-epoch trials of 36 training images \(.*cnn at 16 px at about "
                       r"\d+ images/s.* on cpu\) and the best one's 3 epochs need [\d.]+ "
                       r"(s|minutes); set at least [\d.]+ \(stage plan\)"):
        run_plan(tiny_raw, tmp_path, 0.001)


def test_data_too_small_is_one_line(tmp_path) -> None:
    raw = make_raw(tmp_path / "small", [30, 9])  # 5 opacity images in train
    with pytest.raises(PipelineError, match="class 'opacity' has 5 training images"):
        run_plan(raw, tmp_path, 5)


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
    # The clock's share, in steps of 5%: a 3-second budget is a step of 0.15 s, which
    # decoding 60 images can cross either way; a 10-minute budget's step is 30 s.
    monkeypatch.setattr(planner, "overhead_share", lambda seconds, budget: 0.1)
    return timed


def test_the_overhead_counts_in_steps_of_the_budget() -> None:
    assert planner.overhead_share(0.0, 600) == 0.05
    assert planner.overhead_share(29.9, 600) == 0.05 and planner.overhead_share(30.1, 600) == 0.1
    assert planner.overhead_share(121, 600) == 0.25
