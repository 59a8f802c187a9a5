"""Duplicate images across splits and labels: the hash, the pigeonhole search, and
prepare's policy (warn, fail, drop) on folders of PNG and JPEG files the tests write."""

from __future__ import annotations

import io
import json
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pytest
from imagefiles import data_cfg, prepare_cfg, scan
from PIL import Image

from medpipe import PipelineError
from medpipe.data import duplicates, prepare, store
from medpipe.data.sources.registry import read
from stages.download import download

# ------------------------------------------------------------------------------ the hash


def test_coefficients_are_those_of_imagehash_phash() -> None:
    """On a 32 x 32 image the DCT is phash's: its 8 x 8 corner against its median gives
    imagehash's bits exactly."""
    images = np.stack([scan(seed, 32) for seed in range(12)])[:, None]
    c = duplicates.coefficients(images, dtype=np.float64).reshape(-1, 16, 16)[:, :8, :8]
    bits = c.reshape(-1, 64) > np.median(c.reshape(-1, 64), axis=1, keepdims=True)
    for image, row in zip(images, bits, strict=True):
        expected = imagehash.phash(Image.fromarray(image[0])).hash.ravel()
        assert np.array_equal(row, expected)


def test_coefficients_resize_as_the_store_does() -> None:
    """A 64 px image gives the coefficients of its antialiased resize to 32 px."""
    import torch

    from medpipe.data.pixels import resize

    image = scan(3, 64)
    small = resize(torch.from_numpy(image).double()[None, None], 32)[0, 0].numpy()
    c = duplicates.coefficients(image[None, None], dtype=np.float64)
    p = duplicates._dct_matrix()
    assert np.allclose(c[0], (p @ small @ p.T).ravel(), rtol=1e-9, atol=1e-6)


def brute_force(values: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    d = np.bitwise_count(values[:, None] ^ values[None, :])
    i, j = np.nonzero(np.triu(d <= threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def test_pigeonhole_search_finds_every_pair_within_the_threshold() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, 1500, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    # Planted pairs at 0 to 6 bits, the flipped bits anywhere, so every segment is tried.
    for k, bits in enumerate([0, 1, 2, 3, 4, 4, 4, 5, 6] * 10):
        flip = rng.choice(64, size=bits, replace=False)
        values[1000 + k] = values[k] ^ np.uint64(sum(1 << int(b) for b in flip))
    values = np.unique(values)
    found = {tuple(p) for p in duplicates.near_pairs(values).tolist()}
    assert found == brute_force(values, duplicates.THRESHOLD)
    assert len(found) >= 60  # the planted pairs within 4 bits (and only those, by chance)


def test_groups_join_identical_hashes_and_chains_of_near_ones() -> None:
    a = np.uint64(0x0123456789ABCDEF)
    far = np.uint64(0xFEDCBA9876543210)
    one, five = np.uint64(1 << 10), np.uint64(0b11111 << 40)
    h = np.array([a, far, a, a ^ one, a ^ one ^ np.uint64(1 << 50), far ^ five], dtype=np.uint64)
    assert [g.tolist() for g in duplicates.groups(h)] == [[0, 2, 3, 4]]


def test_exact_groups_are_read_a_block_at_a_time(tmp_path) -> None:
    images = np.stack([scan(s, 8) for s in range(10)])[:, None]
    images[1:5] = images[0]  # rows 0-4 the same
    images[8] = images[7]
    np.save(store.images_path(tmp_path, "train"), images[:6])
    np.save(store.images_path(tmp_path, "test"), images[6:])
    rows = duplicates._Rows(tmp_path, ["train", "test"])
    rows.block = 3  # a group over two blocks, and blocks over two groups and two splits
    found = [np.array([0, 1, 2, 3, 4]), np.array([5, 6]), np.array([7, 8])]
    assert duplicates._exact(rows, found) == 2
    assert np.array_equal(rows.take(np.array([8, 0, 6])), images[[8, 0, 6]])


# ------------------------------------------------------------------------- prepare's policy


def save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def near_copy(image: np.ndarray) -> bytes:
    """The same scan 10 levels brighter, re-encoded as a JPEG."""
    buf = io.BytesIO()
    Image.fromarray(np.clip(image.astype(int) + 10, 0, 255).astype(np.uint8)).save(
        buf, format="JPEG", quality=90)
    return buf.getvalue()


def split_folder(root: Path) -> Path:
    """train/val/test with classes a and b, distinct scans; then an exact copy of a train
    image in test, a brightened JPEG copy of another in val, and a mirrored copy (a
    different image) in test."""
    seed = 0
    for split, n in (("train", 8), ("val", 3), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(n):
                save_png(root / split / cls / f"{i:03d}.png", scan(seed))
                seed += 1
    original = np.asarray(Image.open(root / "train/a/000.png"))
    (root / "test/a/copy.png").write_bytes((root / "train/a/000.png").read_bytes())
    (root / "val/b/near.jpg").write_bytes(near_copy(np.asarray(Image.open(
        root / "train/b/001.png"))))
    save_png(root / "test/a/mirrored.png", original[:, ::-1])
    return root


def prepared(tmp_path: Path, folder: Path, **changes) -> tuple[dict, Path]:
    download(data_cfg(path=str(folder)), tmp_path / "raw")
    out = tmp_path / "store"
    summary = prepare.prepare(read(tmp_path / "raw"), out, prepare_cfg(image_size=32, **changes))
    return summary, out


EXPECTED = [["train/a/000.png", "test/a/copy.png"], ["train/b/001.png", "val/b/near.jpg"]]


def test_copies_in_other_splits_are_reported_and_kept_under_warn(tmp_path, caplog) -> None:
    summary, out = prepared(tmp_path, split_folder(tmp_path / "d"))
    found = summary["duplicates"]
    assert found["groups"] == EXPECTED  # the mirrored image and the others: not flagged
    assert found["count"] == 2 and found["exact"] == 1 and found["dropped"] == 0
    assert summary["images"] == {"train": 16, "val": 7, "test": 8}
    assert "2 group(s) of duplicate images" in caplog.text
    assert "train/a/000.png (train), test/a/copy.png (test)" in caplog.text


def test_fail_names_the_count_and_the_first_group(tmp_path) -> None:
    with pytest.raises(PipelineError) as info:
        prepared(tmp_path, split_folder(tmp_path / "d"), duplicates="fail")
    message = str(info.value)
    assert "\n" not in message and message.startswith("2 group(s) of duplicate images")
    assert "(first: train/a/000.png (train), test/a/copy.png (test))" in message
    assert "'prepare.duplicates'" in message and message.endswith("(stage prepare)")
    assert not (tmp_path / "store").exists() and not list(tmp_path.glob(".tmp-*"))


def test_drop_keeps_the_train_copy(tmp_path) -> None:
    summary, out = prepared(tmp_path, split_folder(tmp_path / "d"), duplicates="drop")
    assert summary["duplicates"]["dropped"] == 2 and summary["duplicates"]["groups"] == EXPECTED
    assert summary["images"] == {"train": 16, "val": 6, "test": 7}
    manifest = pd.read_csv(out / store.MANIFEST)
    ids = set(manifest["source_id"])
    assert {"train/a/000.png", "train/b/001.png", "test/a/mirrored.png"} <= ids
    assert not {"test/a/copy.png", "val/b/near.jpg"} & ids
    for split in store.SPLITS:  # arrays, labels and manifest rows still line up
        data = store.load_split(out, split)
        assert len(data.images) == len(data.labels) == (manifest["split"] == split).sum()
    assert json.loads((out / store.STATS).read_text())["images"]["test"] == 7


def test_an_image_in_two_class_folders_is_reported_and_drop_fixes_the_statistics(
        tmp_path) -> None:
    """The same file under two labels, both in train: a conflict even within one split.
    drop keeps the first copy, and the train statistics are those of the images kept."""
    root = split_folder(tmp_path / "d")
    (root / "train/b/also_a.png").write_bytes((root / "train/a/005.png").read_bytes())
    summary, out = prepared(tmp_path, root, duplicates="drop")
    assert ["train/a/005.png", "train/b/also_a.png"] in summary["duplicates"]["groups"]
    train = store.load_split(out, "train").images.astype(np.float64) / 255.0
    assert len(train) == 16
    assert summary["mean"][0] == pytest.approx(train.mean(), abs=1e-6)
    assert summary["std"][0] == pytest.approx(train.std(), abs=1e-6)


def test_copy_in_two_class_folders_without_a_split_is_reported(tmp_path) -> None:
    root = tmp_path / "d"
    for k, cls in enumerate(("a", "b")):
        for i in range(8):
            save_png(root / cls / f"{i:03d}.png", scan(100 + 10 * k + i))
    (root / "b" / "dup.png").write_bytes((root / "a" / "003.png").read_bytes())
    summary, _ = prepared(tmp_path, root)
    assert summary["duplicates"]["groups"] == [["a/003.png", "b/dup.png"]]


def test_distinct_synthetic_images_are_not_flagged(tmp_path) -> None:
    """The default data: chest phantoms that all look alike, none a duplicate."""
    from medpipe.data import phantoms
    from medpipe.data.raw import RawDataset

    images, labels = phantoms.generate(100, ["normal", "opacity"], 64, seed=0)
    raw = RawDataset(classes=["normal", "opacity"], images=images, labels=labels,
                     ids=[f"s{i}" for i in range(len(labels))], channels=1)
    summary = prepare.prepare(raw, tmp_path / "store", prepare_cfg(image_size=64))
    assert summary["duplicates"] == {"count": 0, "exact": 0, "dropped": 0, "groups": []}
