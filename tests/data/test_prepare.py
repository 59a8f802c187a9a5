"""Preprocessing: stratified splits, channel/intensity conversion, resize and the store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from medpipe import PipelineError
from medpipe.data import pixels, prepare, splitting, store
from medpipe.data.raw import RawDataset
from medpipe.params.loading import validate
from medpipe.params.sections import PrepareParams


def make_cfg(**changes: object) -> PrepareParams:
    values: dict[str, object] = {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25,
                                 "image_size": 8, "channels": 1, "on_error": "fail",
                                 "workers": 1}
    values.update(changes)
    return PrepareParams(**values)  # type: ignore[arg-type]


def make_raw(n: int = 40, size: int = 16, classes: tuple[str, ...] = ("a", "b"),
             seed: int = 0) -> RawDataset:
    """Random grey uint8 images, labels interleaved over ``classes``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(classes)
    return RawDataset(classes=list(classes), images=images, labels=labels,
                      ids=[f"img-{i:03d}" for i in range(n)])


# --------------------------------------------------------------------------- split_indices


@pytest.mark.parametrize(
    ("counts", "val", "test"),
    [([100, 60, 40], 0.15, 0.15), ([50, 50], 0.2, 0.2), ([33, 17, 9], 0.25, 0.1),
     ([120, 30], 0.1, 0.3)],
)
def test_split_is_stratified_disjoint_and_complete(counts: list[int], val: float,
                                                    test: float) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(1).shuffle(labels)
    parts = splitting.split_indices(labels, val, test, seed=0)
    assert set(parts) == {"train", "val", "test"}
    every = np.concatenate(list(parts.values()))
    assert len(every) == len(labels)
    assert np.array_equal(np.sort(every), np.arange(len(labels)))  # disjoint and covering
    for name, idx in parts.items():
        assert np.array_equal(idx, np.sort(idx)), f"{name} indices are not sorted"
    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    for name, frac in fractions.items():
        got = np.bincount(labels[parts[name]], minlength=len(counts))
        want = frac * np.asarray(counts)
        assert np.all(np.abs(got - want) <= 1.0 + 1e-9), (name, got.tolist(), want.tolist())


def test_split_is_deterministic_per_seed_and_varies_with_seed() -> None:
    labels = np.arange(200) % 2
    a = splitting.split_indices(labels, 0.2, 0.2, seed=5)
    b = splitting.split_indices(labels, 0.2, 0.2, seed=5)
    c = splitting.split_indices(labels, 0.2, 0.2, seed=6)
    for name in ("train", "val", "test"):
        assert np.array_equal(a[name], b[name])
    assert any(not np.array_equal(a[name], c[name]) for name in ("train", "val", "test"))


@pytest.mark.parametrize(
    ("val", "test"),
    [(0.0, 0.2), (0.2, 0.0), (1.0, 0.1), (-0.1, 0.2), (0.2, 1.5), (0.5, 0.5), (0.6, 0.45)],
)
def test_bad_fractions_are_refused(val: float, test: float) -> None:
    with pytest.raises(PipelineError, match=r"prepare\.(val|test)_fraction"):
        validate(make_cfg(val_fraction=val, test_fraction=test), stage="prepare")


def test_too_few_images_to_stratify_is_a_pipeline_error() -> None:
    labels = np.array([0] * 20 + [1])  # one image of class 1 cannot go to three splits
    with pytest.raises(PipelineError, match="cannot split the data by class"):
        splitting.split_indices(labels, 0.2, 0.2, seed=0)


# --------------------------------------------------------------------------- to_tensor_batch


def test_grey_to_three_channels_replicates() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 6), dtype=np.uint8)
    x = pixels.to_tensor_batch(images, 3)
    assert x.shape == (2, 3, 5, 6) and x.dtype == torch.float32
    expected = torch.from_numpy(images.astype(np.float32) / 255.0)
    for c in range(3):
        assert torch.equal(x[:, c], expected)


def test_grey_to_one_channel_keeps_values() -> None:
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = pixels.to_tensor_batch(images, 1)
    assert x.shape == (1, 1, 2, 2)
    assert torch.allclose(x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))


def test_rgb_to_one_channel_uses_bt601_luma() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    x = pixels.to_tensor_batch(rgb, 1)
    assert x.shape == (3, 1, 4, 5)
    f = rgb.astype(np.float64) / 255.0
    luma = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    np.testing.assert_allclose(x[:, 0].numpy(), luma, atol=1e-6)
    # Pure primaries give exactly the weights.
    primaries = np.zeros((3, 1, 1, 3), dtype=np.uint8)
    for i in range(3):
        primaries[i, 0, 0, i] = 255
    y = pixels.to_tensor_batch(primaries, 1).flatten()
    assert torch.allclose(y, torch.tensor([0.299, 0.587, 0.114]))


def test_rgb_stays_rgb_and_rgba_drops_alpha() -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (2, 3, 3, 4), dtype=np.uint8)
    x = pixels.to_tensor_batch(rgba, 3)
    assert x.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), rgba[..., :3] / 255.0, atol=1e-7)


def test_uint16_is_scaled_by_65535() -> None:
    images = np.array([[[0, 65535], [32768, 255]]], dtype=np.uint16)
    x = pixels.to_tensor_batch(images, 1)
    expected = torch.tensor([[0.0, 1.0], [32768 / 65535, 255 / 65535]])
    assert torch.allclose(x[0, 0], expected)
    assert float(x.max()) == 1.0


def test_bad_image_rank_is_a_pipeline_error() -> None:
    with pytest.raises(PipelineError, match="2-D"):
        pixels.to_tensor_batch(np.zeros((4, 4), dtype=np.uint8), 1)


# ------------------------------------------------------------------------------------ resize


def test_resize_gives_requested_shape() -> None:
    x = torch.rand(2, 3, 16, 12)
    y = pixels.resize(x, 8)
    assert y.shape == (2, 3, 8, 8)
    # Antialiased bilinear keeps a constant image constant.
    flat = pixels.resize(torch.full((1, 1, 16, 16), 0.3), 5)
    assert torch.allclose(flat, torch.full((1, 1, 5, 5), 0.3))


def test_resize_to_same_size_is_a_no_op() -> None:
    x = torch.rand(2, 1, 10, 10)
    y = pixels.resize(x, 10)
    assert torch.equal(x, y)


# ----------------------------------------------------------------------------------- prepare


def test_prepare_writes_the_store(tmp_path: Path) -> None:
    raw = make_raw(n=40, size=16)
    out = tmp_path / "prepared"
    cfg = make_cfg(image_size=8, channels=3)
    stats = prepare.prepare(raw, out, cfg)

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{s}_{k}.npy" for s in store.SPLITS for k in ("images", "labels")]
                           + [store.MANIFEST, store.STATS])
    total = 0
    for split in store.SPLITS:
        images = np.load(store.images_path(out, split))
        labels = np.load(store.labels_path(out, split))
        assert images.dtype == np.uint8 and images.ndim == 4
        assert images.shape[1:] == (3, 8, 8)
        assert labels.dtype == np.int64 and len(labels) == len(images)
        # Grey input replicated: the three channels are equal.
        assert np.array_equal(images[:, 0], images[:, 2])
        total += len(labels)
    assert total == 40

    manifest = pd.read_csv(out / store.MANIFEST)
    assert len(manifest) == 40
    assert list(manifest.columns) == ["split", "index", "label", "class", "source_id"]
    assert sorted(manifest["source_id"]) == sorted(raw.ids)
    for split in store.SPLITS:
        rows = manifest[manifest["split"] == split]
        labels = np.load(store.labels_path(out, split))
        assert rows["index"].tolist() == list(range(len(labels)))
        assert rows["label"].tolist() == labels.tolist()
        assert rows["class"].tolist() == [raw.classes[k] for k in labels]
        # source ids point back at the raw images with the same label.
        raw_idx = [raw.ids.index(s) for s in rows["source_id"]]
        assert raw.labels[raw_idx].tolist() == labels.tolist()

    on_disk = json.loads((out / store.STATS).read_text())
    only_metrics = ("positive_class", "patients", "skipped", "duplicates")  # not in stats
    assert on_disk == {k: v for k, v in stats.items() if k not in only_metrics}
    assert stats["skipped"] == {"count": 0, "files": []} and stats["positive_class"] == "b"
    assert stats["patients"] == {"count": None, "from": None}
    assert stats["duplicates"] == {"count": 0, "exact": 0, "dropped": 0, "groups": []}
    assert stats["classes"] == ["a", "b"] and stats["image_size"] == 8
    assert stats["channels"] == 3 and len(stats["mean"]) == 3 and len(stats["std"]) == 3
    assert sum(sum(c.values()) for c in stats["counts"].values()) == 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_prepare_pixels_are_the_resized_quantised_raw_images(tmp_path: Path) -> None:
    raw = make_raw(n=20, size=16)
    out = tmp_path / "prepared"
    prepare.prepare(raw, out, make_cfg(image_size=16, val_fraction=0.2, test_fraction=0.2))
    manifest = pd.read_csv(out / store.MANIFEST)
    for split in store.SPLITS:
        ids = manifest.loc[manifest["split"] == split, "source_id"]
        raw_idx = [raw.ids.index(s) for s in ids]
        images = np.load(store.images_path(out, split))
        # Same size: no resampling, so the stored pixels are the raw pixels exactly.
        assert np.array_equal(images[:, 0], raw.images[raw_idx])


def test_prepare_stats_come_from_the_train_split_only(tmp_path: Path) -> None:
    cfg = make_cfg(image_size=8, val_fraction=0.25, test_fraction=0.25, seed=3)
    raw = make_raw(n=48, size=16, seed=4)
    parts = splitting.split_indices(raw.labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    images = raw.images.copy()
    images[parts["val"]] = 255
    images[parts["test"]] = 255
    raw.images = images
    out = tmp_path / "prepared"
    stats = prepare.prepare(raw, out, cfg)

    train = np.load(store.images_path(out, "train")).astype(np.float64) / 255.0
    assert train.shape[0] == len(parts["train"])
    assert np.all(np.load(store.images_path(out, "val")) == 255)
    assert stats["mean"][0] == pytest.approx(train.mean(), abs=1e-4)
    assert stats["std"][0] == pytest.approx(train.std(), abs=1e-4)
    # The bright val/test images would have pulled the mean far up.
    everything = np.concatenate([np.load(store.images_path(out, s)) for s in store.SPLITS])
    assert abs(stats["mean"][0] - everything.mean() / 255.0) > 0.1


def test_class_missing_from_a_split_is_named(tmp_path: Path) -> None:
    raw = make_raw(n=12, size=16, classes=("normal", "opacity"))
    # Official splits where 'opacity' (odd indices) never lands in 'val'.
    splits = np.array(["train"] * 12, dtype=object)
    splits[[0, 2]] = "val"
    splits[[4, 5]] = "test"
    raw.splits = splits
    out = tmp_path / "prepared"
    with pytest.raises(PipelineError) as info:
        prepare.prepare(raw, out, make_cfg())
    assert "class 'opacity'" in str(info.value)
    assert "split 'val'" in str(info.value)
    assert not out.exists()


def test_official_splits_are_used_when_given(tmp_path: Path) -> None:
    raw = make_raw(n=12, size=16)
    splits = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 4, dtype=object)
    raw.splits = splits
    out = tmp_path / "prepared"
    stats = prepare.prepare(raw, out, make_cfg())
    assert stats["counts"] == {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1},
                               "test": {"a": 2, "b": 2}}


def _failing_resize(monkeypatch: pytest.MonkeyPatch, fail_on_call: int) -> list[int]:
    """Make ``pixels.resize`` raise on its ``fail_on_call``-th call; return the counter."""
    real: Callable[[torch.Tensor, int], torch.Tensor] = pixels.resize
    calls = [0]

    def resize(x: torch.Tensor, size: int) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == fail_on_call:
            raise RuntimeError("disk on fire")
        return real(x, size)

    monkeypatch.setattr(pixels, "resize", resize)
    return calls


def test_failure_midway_leaves_no_output_and_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _failing_resize(monkeypatch, fail_on_call=2)  # train written, val fails
    out = tmp_path / "prepared"
    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare.prepare(make_raw(), out, make_cfg())
    assert calls[0] == 2
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_keeps_an_existing_output_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "prepared"
    prepare.prepare(make_raw(seed=1), out, make_cfg())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _failing_resize(monkeypatch, fail_on_call=3)
    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare.prepare(make_raw(seed=2), out, make_cfg())
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_constant_train_images_are_refused(tmp_path: Path) -> None:
    raw = make_raw()
    raw.images = np.full_like(raw.images, 128)
    with pytest.raises(PipelineError, match="constant intensity"):
        prepare.prepare(raw, tmp_path / "prepared", make_cfg())
    assert list(tmp_path.iterdir()) == []


def test_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    raw = make_raw()
    raw.labels = raw.labels.copy()
    raw.labels[0] = 2
    with pytest.raises(PipelineError, match=r"labels must lie in 0\.\.1"):
        prepare.prepare(raw, tmp_path / "prepared", make_cfg())


# ------------------------------------------------------------------ image size and room


def disk_with(free: int, asked: list[Path] | None = None) -> Callable[[Path], SimpleNamespace]:
    """A stand-in for ``shutil.disk_usage``: ``free`` bytes free on a 1 TB disk; records
    the paths it is asked about in ``asked``."""

    def disk_usage(path: Path) -> SimpleNamespace:
        if asked is not None:
            asked.append(Path(path))
        return SimpleNamespace(total=10**12, used=10**12 - free, free=free)

    return disk_usage


@pytest.fixture
def no_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any resize or store array fails the test: the checks must come before them (and a
    huge size would otherwise try to allocate terabytes)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("conversion started")

    monkeypatch.setattr(pixels, "resize", refuse)
    monkeypatch.setattr(np.lib.format, "open_memmap", refuse)


@pytest.mark.parametrize("size", [100000, 4097, 7, 0, -64])
def test_image_size_out_of_bounds_is_refused_before_any_work(
        tmp_path: Path, no_conversion: None, size: int) -> None:
    with pytest.raises(PipelineError) as caught:
        prepare.prepare(make_raw(), tmp_path / "prepared", make_cfg(image_size=size))
    assert str(caught.value) == ("params.yaml: 'prepare.image_size' must be between 8 and "
                                 f"4096 px, got {size} (stage prepare)")
    assert list(tmp_path.iterdir()) == []


def test_prepare_stage_checks_image_size_before_reading_the_raw_data(tmp_path: Path) -> None:
    from stages.prepare import prepare as prepare_stage

    with pytest.raises(PipelineError, match=r"'prepare\.image_size' must be between 8 and "
                                            r"4096 px, got 100000 \(stage prepare\)$"):
        prepare_stage(make_cfg(image_size=100000), tmp_path / "no-raw", tmp_path / "prepared",
                      tmp_path / "prepare.json")
    assert list(tmp_path.iterdir()) == []


def test_store_larger_than_the_free_disk_is_refused_before_it_is_allocated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_conversion: None) -> None:
    """40 colour images of 4096 px make a 2.0 GB store; the disk has 1.0 GB free."""
    asked: list[Path] = []
    monkeypatch.setattr(shutil, "disk_usage", disk_with(10**9, asked))
    out = tmp_path / "data" / "prepared"  # neither exists yet
    with pytest.raises(PipelineError) as caught:
        prepare.prepare(make_raw(n=40), out, make_cfg(image_size=4096, channels=3))
    assert str(caught.value) == (
        f"{out}: the store (40 images of 3 x 4096 x 4096 px) needs 2.0 GB of disk, but only "
        "1.0 GB is free there; lower 'prepare.image_size' or free disk space (stage prepare)")
    assert asked == [tmp_path]  # the nearest folder that exists, where the store will go
    assert list(tmp_path.iterdir()) == []


def test_store_that_fits_the_free_disk_is_written(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    need = 40 * 3 * 8 * 8  # images x channels x size x size, one byte each
    monkeypatch.setattr(shutil, "disk_usage", disk_with(need))
    stats = prepare.prepare(make_raw(n=40), tmp_path / "prepared",
                               make_cfg(image_size=8, channels=3))
    assert sum(stats["images"].values()) == 40


def test_large_images_are_converted_in_smaller_steps() -> None:
    assert prepare.chunk_rows(1, 64) == prepare.CHUNK  # the usual sizes: unchanged
    assert prepare.chunk_rows(3, 224) == prepare.CHUNK
    assert prepare.chunk_rows(3, 4096) == 5  # 5 x 192 MiB of float32 <= 1 GiB
    assert prepare.chunk_rows(3, 4096) * 3 * 4096**2 * 4 <= prepare.CHUNK_BYTES
