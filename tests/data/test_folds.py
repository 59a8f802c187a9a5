"""Cross-validation folds: stratified, grouped by patient, every class in every fold,
reproducible; the store's pool split into a fold's train and val; refusals."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe import PipelineError
from medpipe.data import folds, prepare, store
from medpipe.data.raw import RawDataset
from medpipe.params.sections import PrepareParams

CLASSES = ["normal", "opacity"]


def test_folds_are_stratified_and_reproducible() -> None:
    labels = np.array([0] * 70 + [1] * 30)
    a = folds.assign(labels, None, 5, seed=0, classes=CLASSES)
    assert sorted(np.bincount(a)) == [20] * 5
    for f in range(5):
        assert np.bincount(labels[a == f]).tolist() == [14, 6]
    assert np.array_equal(a, folds.assign(labels, None, 5, seed=0, classes=CLASSES))
    assert not np.array_equal(a, folds.assign(labels, None, 5, seed=1, classes=CLASSES))


def test_a_patient_stays_in_one_fold() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    labels = np.repeat(rng.integers(0, 2, 40), 3)
    a = folds.assign(labels, groups, 4, seed=0, classes=CLASSES)
    for g in range(40):
        assert len(set(a[groups == g])) == 1


def test_more_folds_than_a_class_allows_is_refused_naming_it() -> None:
    labels = np.array([0] * 20 + [1] * 3)
    with pytest.raises(PipelineError, match=r"'prepare.folds' 5 is more than class 'opacity' "
                                            r"allows: it has 3 images .* use at most 3 folds"):
        folds.assign(labels, None, 5, seed=0, classes=CLASSES)


def test_prepare_writes_the_folds_and_a_fold_splits_the_pool(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    raw = RawDataset(classes=CLASSES, images=rng.integers(0, 255, (60, 12, 12), np.uint8),
                     labels=labels, ids=[str(i) for i in range(60)])
    cfg = PrepareParams(val_fraction=0.2, test_fraction=0.2, image_size=8, channels=1, workers=1,
                        folds=3)
    stats = prepare.prepare(raw, tmp_path / "s", cfg)
    assert stats["folds"] == 3 and folds.count(tmp_path / "s") == 3
    pool = store.load_split(tmp_path / "s", "train"), store.load_split(tmp_path / "s", "val")
    n_pool = sum(len(p.labels) for p in pool)
    seen = []
    for k in range(3):
        train, val = folds.load_fold(tmp_path / "s", k)
        assert len(train.labels) + len(val.labels) == n_pool
        assert set(np.unique(val.labels)) == {0, 1}
        seen.append(val.images.reshape(len(val.labels), -1))
    all_images = np.concatenate([p.images.reshape(len(p.labels), -1) for p in pool])
    assert sorted(map(bytes, np.concatenate(seen))) == sorted(map(bytes, all_images))
    without = prepare.prepare(raw, tmp_path / "t", PrepareParams(
        val_fraction=0.2, test_fraction=0.2, image_size=8, channels=1, workers=1))
    assert "folds" not in without and not (tmp_path / "t" / folds.FOLDS_FILE).exists()
    with pytest.raises(PipelineError, match=r"folds.npy: not found; set 'prepare.folds'"):
        folds.load_fold(tmp_path / "t", 0)
