"""The store's fingerprint: counts, task, sizes, balance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from planstores import make_store

from medpipe.planning import fingerprint


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """60 images of 16 px, 2 : 1 normal to opacity."""
    return make_store(tmp_path_factory.mktemp("store"), [40, 20])


def test_fingerprint_reads_counts_task_and_sizes(tiny_store) -> None:
    fp = fingerprint.read(tiny_store)
    assert fp.task == "binary" and fp.classes == ["normal", "opacity"]
    assert (fp.channels, fp.image_size, fp.native_size) == (1, 16, 16)
    assert fp.images == {"train": 36, "val": 12}  # the test split is not read
    assert fp.train_counts["normal"] == 2 * fp.train_counts["opacity"]
    assert fp.balance_ratio == 0.5
    assert 0 < fp.mean[0] < 1 and fp.std[0] > 0


def test_native_size_comes_from_the_raw_images(tmp_path) -> None:
    from medpipe.data.sources import registry, synthetic
    from medpipe.params.sections import DataParams

    synthetic.fetch(DataParams(resolution=40, n_per_class=2), tmp_path / "raw")
    assert fingerprint.native_size(registry.read(tmp_path / "raw"), tmp_path / "raw") == 40


def test_multilabel_balance_is_the_rarest_prevalence() -> None:
    fp = fingerprint.Fingerprint("multilabel", ["a", "b"], 1, 16, 16,
                                 {"train": 100, "val": 10},
                                 {"a": 10, "b": 50}, {"a": 1, "b": 5}, [0.5], [0.2])
    assert np.isclose(fp.balance_ratio, 0.2)
