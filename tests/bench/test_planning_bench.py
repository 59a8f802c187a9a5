"""bench/planning.py on a tiny synthetic colour folder store: the phantom spec's counts,
and a row per arm with its test figures."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from bench import planning
from medpipe.data import store
from medpipe.planning import planner, rates


@pytest.fixture(scope="module")
def colour_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    return root, planning.make_store(root, "phantom:16:40,20:rgb", None)


def test_a_phantom_spec_gives_its_counts_and_colour(colour_store) -> None:
    _, prepared = colour_store
    stats = store.read_stats(prepared)
    assert stats["channels"] == 3 and stats["image_size"] == 16
    assert stats["classes"] == ["normal", "opacity"]
    labels = [store.load_split(prepared, s).labels for s in ("train", "val", "test")]
    assert sum(int((lab == 1).sum()) for lab in labels) == 20
    assert sum(len(lab) for lab in labels) == 60


def test_the_plan_and_the_paper_baseline_are_trained_and_scored(colour_store,
                                                                monkeypatch) -> None:
    root, prepared = colour_store
    # The plan's decoding, timing and rates are measured; on a loaded machine they can
    # take most of a 6-second budget. They are fixed here (tests/planning/ tests how they
    # are measured): this test is about the benchmark's arms and rows.
    monkeypatch.setattr(planner, "overhead_share", lambda seconds, budget: 0.1)
    monkeypatch.setattr(rates, "measure", lambda candidate, *args: (
        900.0 if candidate.model == "cnn" else 60.0) / (1 + candidate.input_size / 64))
    args = argparse.Namespace(budget=0.1, steps=1, device="cpu", data=None, keep=None)
    assert planning.arms("phantom:16:40,20:rgb") == ["plan", "cnn", "resnet18"]
    assert "recipe" in planning.arms("breastmnist")
    plan = planning.run_arm("plan", "phantom", root, prepared, 0, args)
    assert plan["trials"] >= 3 and plan["plan_min"] > 0 and plan["winner"]["origin"]
    paper = planning.run_arm("resnet18", "phantom", root, prepared, 0, args)
    for row in plan, paper:
        assert row["epochs"] >= 1 and math.isfinite(row["auc"]) and 0 <= row["acc"] <= 1
    json.dumps([plan, paper])  # printable as the benchmark prints them


def test_the_bf16_bench_trains_the_planned_keys_in_either_precision() -> None:
    from bench import bf16_accuracy

    report = {"choices": {"train.model": {"value": "resnet18", "reason": "trial 1"},
                          "train.precision": {"value": "bf16", "reason": "a rung faster"},
                          "augment.affine_p": {"value": 0.25, "reason": "trial 1"},
                          "prepare.image_size": {"value": 48, "reason": "the side"}}}
    fp32 = bf16_accuracy.planned_sections(report, "auto")
    assert fp32 == {"train": {"model": "resnet18", "precision": "auto"},
                    "augment": {"affine_p": 0.25}, "prepare": {"image_size": 48}}
    assert bf16_accuracy.planned_sections(report, "bf16")["train"]["precision"] == "bf16"
