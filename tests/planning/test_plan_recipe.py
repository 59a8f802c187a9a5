"""Writing the plan as a recipe, and the rule that lays it over params.yaml: the plan
fills the keys left at default; keys you changed win."""

from __future__ import annotations

import dataclasses

import pytest

from medpipe import PipelineError
from medpipe.params.sections import AugmentParams, PrepareParams, TrainParams
from medpipe.planning import recipe

PLAN = {"prepare": {"image_size": 48},
        "train": {"model": "resnet18", "epochs": 12, "balance": "loss", "ema": 0.99},
        "augment": {"affine_p": 0.5}}


def test_the_plan_fills_defaults_and_changed_keys_win() -> None:
    mine = dataclasses.replace(TrainParams(), epochs=5)  # as `-S train.epochs=5` sets it
    out = recipe.apply(PLAN, mine, AugmentParams())
    assert (out.train.model, out.train.epochs, out.train.ema) == ("resnet18", 5, 0.99)
    assert out.augment.affine_p == 0.5
    assert out.overridden == ["train.epochs"]
    assert "train.model" in out.planned and "augment.affine_p" in out.planned
    assert out.summary()["plan_overridden"] == ["train.epochs"]


def test_the_planned_side_makes_the_store_unless_you_set_one() -> None:
    cfg, record = recipe.apply_prepare(PLAN, PrepareParams())
    assert cfg.image_size == 48 and record == {"plan_applied": ["prepare.image_size"],
                                               "plan_overridden": []}
    mine = dataclasses.replace(PrepareParams(), image_size=96)
    cfg, record = recipe.apply_prepare(PLAN, mine)
    assert cfg.image_size == 96 and record["plan_overridden"] == ["prepare.image_size"]
    assert recipe.apply_prepare({}, PrepareParams()) == (PrepareParams(), {})


def test_an_empty_plan_changes_nothing(tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    recipe.write(path, {}, "No plan.")
    # never empty: DVC does not restore a stage with an empty params file from its cache
    assert path.read_text() == "# No plan.\nplanned: false\n"
    out = recipe.apply(recipe.read(path), TrainParams(), AugmentParams())
    assert out.train == TrainParams() and out.augment == AugmentParams()
    assert out.summary() == {}


def test_a_written_plan_reads_back(tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    recipe.write(path, PLAN, "Planned.")
    assert recipe.read(path) == PLAN


def test_a_stale_key_is_refused() -> None:
    with pytest.raises(PipelineError, match="unknown key 'train.nonsense'; replan"):
        recipe.apply({"train": {"nonsense": 1}}, TrainParams(), AugmentParams())
