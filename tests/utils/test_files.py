"""A metrics file and its detail file (medpipe.utils.files.write_metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medpipe.data import store
from medpipe.utils.files import detail_path, write_metrics


def test_the_detail_file_sits_beside_the_metrics_file() -> None:
    assert detail_path(Path("metrics/evaluate.json")) == Path("metrics/evaluate_detail.json")
    assert detail_path("m/external/b/prepare.json") == Path("m/external/b/prepare_detail.json")


def test_headline_holds_numbers_and_the_detail_everything(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    detail = {"best_epoch": 3, "val_auc": 0.9, "device": "cpu", "train_seconds": 12.5}
    write_metrics(path, {"best_epoch": 3, "val_auc": 0.9, "val_loss": float("nan"),
                         "roc_auc_low": None}, detail)
    assert json.loads(path.read_text()) == {"best_epoch": 3, "val_auc": 0.9}  # NaN, None out
    assert json.loads((tmp_path / "train_detail.json").read_text()) == detail


@pytest.mark.parametrize("value", ["cpu", True, [0.5], {"low": 0.1}])
def test_a_headline_value_that_is_not_a_number_is_refused(tmp_path: Path, value) -> None:
    with pytest.raises(TypeError, match="headline metric 'x' must be a number"):
        write_metrics(tmp_path / "m.json", {"x": value}, {})
    assert list(tmp_path.iterdir()) == []  # neither file written


def test_the_prepare_headline_names_no_class() -> None:
    summary = {"task": "multiclass", "classes": ["normal", "opacity", "effusion"],
               "image_size": 64, "channels": 1, "mean": [0.3], "std": [0.2],
               "images": {"train": 70, "val": 15, "test": 15}, "folds": 5,
               "counts": {"train": {"normal": 20}}, "positive_class": None,
               "skipped": {"count": 2, "files": ["a.png", "b.png"]},
               "duplicates": {"count": 1, "exact": 1, "dropped": 0, "groups": [["x", "y"]]}}
    assert store.headline(summary) == {
        "classes": 3, "image_size": 64, "channels": 1, "train_images": 70, "val_images": 15,
        "test_images": 15, "folds": 5, "skipped": 2, "duplicates": 1}
