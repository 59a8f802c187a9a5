"""The MedMNIST quality recipes (bench/quality.py) are what the README shows, and every
`-S key=value` in them is a valid parameter that passes the stages' own checks."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from quality import RECIPES  # noqa: E402

from medpipe.params import parse_section  # noqa: E402

STAGE_OF = {"data": "download", "prepare": "prepare", "train": "train", "augment": "train",
            "evaluate": "evaluate"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_readme_quotes_the_recipe(name: str) -> None:
    assert RECIPES[name] in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_sets_valid_params(name: str) -> None:
    from stages.train import check, check_augment

    words = shlex.split(RECIPES[name])
    assert words[:3] == ["dvc", "exp", "run"]
    doc = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    pairs = words[3:]
    assert pairs[::2] == ["-S"] * (len(pairs) // 2)
    for setting in pairs[1::2]:
        key, value = setting.split("=", 1)
        section, field = key.split(".")
        assert field in doc[section], key
        doc[section][field] = yaml.safe_load(value)  # how DVC reads a -S value
    assert doc["data"]["name"] == name
    parsed = {s: parse_section(s, doc[s], stage=STAGE_OF[s]) for s in STAGE_OF}
    check(parsed["train"])
    check_augment(parsed["augment"])
