"""Looking at the data: the grid of training images per class and the counts per split,
written by the prepare stage next to its metrics."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medpipe.data import preview, store
from medpipe.data.raw import RawDataset
from medpipe.params.loading import defaults, parse_section
from stages.prepare import prepare as prepare_stage


def test_sample_spreads_over_a_class_and_is_bounded() -> None:
    labels = np.array([0, 1] * 20)
    assert preview.sample(labels, 1, columns=4).tolist() == [1, 13, 27, 39]
    assert preview.sample(labels[:6], 0, columns=8).tolist() == [0, 2, 4]
    multi = np.zeros((10, 3), dtype=np.uint8)
    multi[[2, 5], 1] = 1
    assert preview.sample(multi, 1).tolist() == [2, 5]


def test_counts_are_one_row_per_split_and_class() -> None:
    stats = {"counts": {"train": {"a": 3, "b": 4}, "test": {"a": 1, "b": 2}}}
    assert preview.counts_rows(stats) == [
        {"split": "train", "class": "a", "count": 3}, {"split": "train", "class": "b", "count": 4},
        {"split": "test", "class": "a", "count": 1}, {"split": "test", "class": "b", "count": 2}]


def test_stage_writes_the_grid_and_the_counts(tmp_path, monkeypatch) -> None:
    """Three classes of 16 px images: the grid has a row per class, its tiles are the
    stored images enlarged pixel for pixel; the counts match the store's."""
    rng = np.random.default_rng(0)
    n = 60
    labels = np.arange(n, dtype=np.int64) % 3
    images = (labels[:, None, None] * 100 + rng.integers(0, 40, (n, 16, 16))).astype(np.uint8)
    raw = RawDataset(classes=["low", "mid", "high"], images=images, labels=labels,
                     ids=[f"i{k}" for k in range(n)], channels=1)
    monkeypatch.setattr("stages.prepare.registry.read", lambda _: raw)
    cfg = parse_section("prepare", {**defaults("prepare"), "image_size": 16, "workers": 1},
                        stage="prepare")
    paths = {name: tmp_path / "metrics" / name for name in ("p.json", "grid.png", "c.json")}
    prepare_stage(cfg, tmp_path / "raw", tmp_path / "store", paths["p.json"],
                  paths["grid.png"], paths["c.json"])
    grid = np.asarray(Image.open(paths["grid.png"]))
    side = preview.TILE[0]  # 16 px, enlarged 4 times to the smallest tile
    assert grid.ndim == 2 and grid.shape == (3 * (side + preview.PAD) + preview.PAD,
                                             preview.LABEL + 8 * (side + preview.PAD)
                                             + preview.PAD)
    train = store.load_split(tmp_path / "store", "train")
    first_high = preview.sample(train.labels, 2)[0]
    top, left = preview.PAD + 2 * (side + preview.PAD), preview.LABEL + preview.PAD
    tile = grid[top:top + side, left:left + side]
    assert np.array_equal(tile[::4, ::4], train.images[first_high, 0])
    counts = json.loads(paths["c.json"].read_text())
    stats = json.loads((tmp_path / "metrics" / "p_detail.json").read_text())
    assert {(r["split"], r["class"]): r["count"] for r in counts} == {
        (split, name): n for split, c in stats["counts"].items() for name, n in c.items()}
