"""Named recipes (recipes/*.yaml) and `medpipe recipe`, which writes one into params.yaml
from any params state, keeping the file's comments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from medpipe import PipelineError
from medpipe.commands import recipe
from medpipe.params.loading import defaults, parse_section
from medpipe.params.sections import STAGE_SECTIONS

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


def stage_sections(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {s: doc[s] for s in STAGE_SECTIONS}


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_the_committed_params_are_the_defaults() -> None:
    """`medpipe recipe default` gives back the committed params.yaml's values."""
    assert stage_sections(ROOT / "params.yaml") == {s: defaults(s) for s in STAGE_SECTIONS}


@pytest.mark.parametrize("name", recipe.available(RECIPES))
def test_each_recipe_sets_valid_params(name: str, params: Path) -> None:
    written = recipe.apply(params, recipe.read_recipe(RECIPES, name))
    on_disk = stage_sections(params)
    assert on_disk == written
    for section, stage in recipe.STAGE_OF.items():
        parse_section(section, on_disk[section], stage=stage)


def test_a_recipe_gives_the_same_file_from_any_params_state(params: Path) -> None:
    pneumonia = recipe.read_recipe(RECIPES, "pneumoniamnist")
    recipe.apply(params, pneumonia)
    clean = stage_sections(params)
    recipe.apply(params, recipe.read_recipe(RECIPES, "breastmnist"))  # another state first:
    text = params.read_text(encoding="utf-8")  # breast sets small_input, warm-up 6, ...
    params.write_text(text.replace("lr: 0.003", "lr: 0.1"), encoding="utf-8")
    recipe.apply(params, pneumonia)
    assert stage_sections(params) == clean
    assert clean["train"]["small_input"] is False and clean["train"]["lr"] == 0.003


def test_default_recipe_restores_the_committed_file_byte_for_byte(params: Path) -> None:
    recipe.apply(params, recipe.read_recipe(RECIPES, "breastmnist"))
    recipe.apply(params, recipe.read_recipe(RECIPES, "default"))
    assert params.read_text(encoding="utf-8") == (ROOT / "params.yaml").read_text("utf-8")


def test_comments_and_own_sections_are_kept(params: Path) -> None:
    text = params.read_text(encoding="utf-8") + "\nnotes:  # mine\n  author: me\n"
    params.write_text(text, encoding="utf-8")
    recipe.apply(params, recipe.read_recipe(RECIPES, "pneumoniamnist"))
    out = params.read_text(encoding="utf-8")
    assert "# sgd (with momentum) | adam | adamw" in out and "notes:  # mine" in out
    assert yaml.safe_load(out)["notes"] == {"author": "me"}
    assert "  name: pneumoniamnist  " in out and "  url: null  " in out


@pytest.mark.parametrize(("content", "error"), [
    ("train:\n  modle: resnet18\n", "unknown key 'train.modle'"),
    ("trian:\n  model: resnet18\n", "'trian' is not a params section"),
    ("train: [1, 2]\n", "'train' is not a params section with keys"),
    ("train:\n  lr: -1\n", "'train.lr' must be positive, got -1"),
])
def test_bad_recipe_is_one_line_and_leaves_params_alone(tmp_path: Path, params: Path,
                                                        content: str, error: str) -> None:
    (tmp_path / "bad.yaml").write_text(content, encoding="utf-8")
    before = params.read_bytes()
    with pytest.raises(PipelineError) as info:
        recipe.apply(params, recipe.read_recipe(tmp_path, "bad"))
    assert error in str(info.value) and "\n" not in str(info.value)
    assert params.read_bytes() == before


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(PipelineError, match="no such recipe .*breastmnist, default, "
                                            "pneumoniamnist"):
        recipe.read_recipe(RECIPES, "dermamnist")
