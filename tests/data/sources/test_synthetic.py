"""The synthetic source: the classes it generates, and that the default params (no
``data.classes``) give the default data, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import ROOT

from medpipe import PipelineError
from medpipe.data.sources.registry import read
from medpipe.params.loading import parse_section
from stages.download import download


def synthetic_cfg(**changes):
    """The committed params.yaml's ``data`` section, small, with ``changes``."""
    values = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["data"]
    values.update(n_per_class=3, resolution=24, **changes)
    return parse_section("data", values, stage="download")


def test_default_classes_are_null_and_give_the_default_data(tmp_path) -> None:
    assert synthetic_cfg().source == "synthetic" and synthetic_cfg().classes is None
    download(synthetic_cfg(), tmp_path / "null")
    download(synthetic_cfg(classes=["normal", "opacity"]), tmp_path / "listed")
    for name in ("images.npy", "labels.npy", "dataset.json"):
        assert (tmp_path / "null" / name).read_bytes() == (tmp_path / "listed" / name).read_bytes()
    meta = json.loads((tmp_path / "null" / "dataset.json").read_text())
    assert meta["classes"] == ["normal", "opacity"]
    assert read(tmp_path / "null").labels.tolist() == [0, 1] * 3


def test_listed_classes_pick_and_order_the_generated_ones(tmp_path) -> None:
    download(synthetic_cfg(classes=["effusion", "normal", "opacity"]), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["effusion", "normal", "opacity"]
    assert data.labels.tolist() == [0, 1, 2] * 3 and len(np.asarray(data.images)) == 9


def test_unknown_class_is_named(tmp_path) -> None:
    with pytest.raises(PipelineError, match="'data.classes' has unknown class 'pneumonia'"):
        download(synthetic_cfg(classes=["normal", "pneumonia"]), tmp_path / "raw")
