"""Prepare on image files: worker processes give the single-process store byte for byte;
unreadable files fail or are skipped and recorded; decompression bombs are refused; and
the multi-label store contract (uint8 multi-hot labels, task, per-finding counts)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from imagefiles import data_cfg, make_folder, pixels, png_header_only, prepare_cfg, save

from medpipe import PipelineError
from medpipe.data import prepare, store
from medpipe.data.raw import RawDataset
from medpipe.data.sources.registry import read
from stages.download import download
from stages.prepare import prepare as prepare_stage


def mixed_folder(root):
    """Images of several sizes, bit depths and formats, grey and colour."""
    for k, cls in enumerate(("a", "b")):
        for i in range(30):
            seed = 100 * k + i
            kind = i % 4
            if kind == 0:
                save(root / cls / f"{i:02d}.png", pixels(seed, (20 + i, 17)))
            elif kind == 1:
                save(root / cls / f"{i:02d}.tif", pixels(seed, (15, 31), np.uint16))
            elif kind == 2:
                save(root / cls / f"{i:02d}.bmp", pixels(seed, (12, 12, 3)))
            else:
                save(root / cls / f"{i:02d}.jpg", pixels(seed, (16, 24, 3)))
    return root


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    mixed_folder(root / "images")
    download(data_cfg(path=str(root / "images")), root / "raw")
    return root / "raw"


@pytest.mark.parametrize("channels", [1, 3])
def test_workers_give_the_same_store(tmp_path, raw_dir, channels) -> None:
    stats = {}
    for workers in (1, 2):
        cfg = prepare_cfg(workers=workers, channels=channels, image_size=16)
        stats[workers] = prepare.prepare(read(raw_dir), tmp_path / f"w{workers}", cfg)
    assert stats[1] == stats[2]
    for name in sorted(p.name for p in (tmp_path / "w1").iterdir()):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    split = store.load_split(tmp_path / "w2", "train")
    assert split.images.shape[1:] == (channels, 16, 16) and split.images.max() > 0


def test_file_images_are_prepared_like_arrays(tmp_path) -> None:
    """A folder of PNGs and the same pixels as an array give the same stored images."""
    arrays = np.stack([pixels(i, (20, 20)) for i in range(24)])
    for i, arr in enumerate(arrays):
        save(tmp_path / "d" / "ab"[i % 2] / f"{i:02d}.png", arr)
    download(data_cfg(path=str(tmp_path / "d")), tmp_path / "raw")
    files = read(tmp_path / "raw")
    order = [int(name.split("/")[1][:2]) for name in files.ids]
    as_arrays = RawDataset(classes=files.classes, images=arrays[order], labels=files.labels,
                           ids=files.ids)
    cfg = prepare_cfg(image_size=8)
    a = prepare.prepare(files, tmp_path / "from-files", cfg)
    b = prepare.prepare(as_arrays, tmp_path / "from-arrays", cfg)
    assert a == b
    for split in store.SPLITS:
        assert np.array_equal(store.load_split(tmp_path / "from-files", split).images,
                              store.load_split(tmp_path / "from-arrays", split).images)


@pytest.mark.parametrize("workers", [1, 2])
def test_grey_images_at_the_store_size_in_a_colour_set(tmp_path, workers) -> None:
    """Grey and RGB files already at prepare.image_size: the grey ones are replicated to
    three channels without a resize in between."""
    for i in range(16):
        shape = (8, 8) if i % 2 else (8, 8, 3)  # grey and colour in each class
        save(tmp_path / "d" / "ab"[(i // 2) % 2] / f"{i:02d}.png", pixels(i, shape))
    download(data_cfg(path=str(tmp_path / "d")), tmp_path / "raw")
    files = read(tmp_path / "raw")
    stats = prepare.prepare(files, tmp_path / "store", prepare_cfg(image_size=8,
                                                                     channels="auto",
                                                                     workers=workers))
    assert stats["channels"] == 3
    manifest = pd.read_csv(tmp_path / "store" / store.MANIFEST)
    for split in store.SPLITS:
        images = store.load_split(tmp_path / "store", split).images
        ids = manifest.loc[manifest["split"] == split, "source_id"].tolist()
        for image, name in zip(images, ids, strict=True):
            i = int(name.split("/")[1][:2])
            expected = pixels(i, (8, 8) if i % 2 else (8, 8, 3))
            expected = np.stack([expected] * 3) if i % 2 else expected.transpose(2, 0, 1)
            assert np.array_equal(image, expected), name


def test_grey_arrays_at_the_store_size_made_rgb(tmp_path) -> None:
    arrays = np.stack([pixels(i, (8, 8)) for i in range(16)])
    raw = RawDataset(classes=["a", "b"], images=arrays, labels=np.arange(16) % 2,
                     ids=[f"img-{i}" for i in range(16)])
    prepare.prepare(raw, tmp_path / "store", prepare_cfg(image_size=8, channels=3))
    train = store.load_split(tmp_path / "store", "train").images
    assert train.shape[1:] == (3, 8, 8)
    assert np.array_equal(train[:, 0], train[:, 2]) and train.max() > 0


def corrupt_folder(root):
    make_folder(root, {"a": 10, "b": 10})
    good = (root / "a" / "000.png").read_bytes()
    (root / "a" / "003.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "b" / "007.png").write_bytes(b"not a png at all")
    return root


def test_corrupt_image_fails_naming_the_file(tmp_path) -> None:
    download(data_cfg(path=str(corrupt_folder(tmp_path / "d"))), tmp_path / "raw")
    for workers in (1, 2):
        with pytest.raises(PipelineError) as info:
            prepare_stage(prepare_cfg(workers=workers), tmp_path / "raw", tmp_path / "store",
                          tmp_path / "prepare.json")
        message = str(info.value)
        assert message.startswith(("a/003.png: not a readable image", "b/007.png: not a "
                                   "readable image"))
        assert message.endswith("(prepare.on_error: skip leaves such files out) "
                                "(stage prepare)")
        assert not (tmp_path / "store").exists() and not (tmp_path / "prepare.json").exists()
        assert not (tmp_path / "prepare_detail.json").exists()
        assert not list(tmp_path.glob(".tmp-*"))


def test_skip_leaves_corrupt_images_out_and_records_them(tmp_path) -> None:
    download(data_cfg(path=str(corrupt_folder(tmp_path / "d"))), tmp_path / "raw")
    summaries = {}
    for workers in (1, 2):
        summaries[workers] = prepare_stage(
            prepare_cfg(on_error="skip", workers=workers), tmp_path / "raw",
            tmp_path / f"store{workers}", tmp_path / f"prepare{workers}.json")
    summary = summaries[1]
    assert summaries[2] == summary
    assert summary["skipped"]["count"] == 2
    assert sorted(f["file"] for f in summary["skipped"]["files"]) == ["a/003.png", "b/007.png"]
    detail = json.loads((tmp_path / "prepare1_detail.json").read_text())
    assert detail["skipped"] == summary["skipped"]
    assert json.loads((tmp_path / "prepare1.json").read_text())["skipped"] == 2
    assert sum(summary["images"].values()) == 18
    manifest = pd.read_csv(tmp_path / "store1" / store.MANIFEST)
    assert len(manifest) == 18 and "a/003.png" not in set(manifest["source_id"])
    for split in store.SPLITS:  # images, labels and manifest rows still line up
        part = store.load_split(tmp_path / "store1", split)
        rows = manifest[manifest["split"] == split]
        assert len(part.images) == len(part.labels) == len(rows) == summary["images"][split]
        assert part.images.reshape(len(rows), -1).max(axis=1).min() > 0  # no blank holes
        other = store.load_split(tmp_path / "store2", split)
        assert np.array_equal(part.images, other.images)


def test_bomb_is_refused_even_when_skipping(tmp_path) -> None:
    root = make_folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "b" / "003.png").write_bytes(png_header_only(12000, 12000))
    download(data_cfg(path=str(root)), tmp_path / "raw")
    with pytest.raises(PipelineError) as info:
        prepare.prepare(read(tmp_path / "raw"), tmp_path / "store",
                           prepare_cfg(on_error="skip"))
    assert str(info.value).startswith("b/003.png: image 12000 x 12000 of 144,000,000 pixels "
                                      "is over the limit")
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------------- multi-label


def multilabel_raw(n: int = 120, groups: bool = False) -> RawDataset:
    rng = np.random.default_rng(3)
    labels = (rng.random((n, 3)) < [0.4, 0.25, 0.1]).astype(np.uint8)
    images = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
    return RawDataset(classes=["effusion", "mass", "hernia"], images=images, labels=labels,
                      ids=[f"img{i:03d}" for i in range(n)],
                      groups=np.array([f"P{i // 3}" for i in range(n)]) if groups else None)


def test_multilabel_store_contract(tmp_path) -> None:
    raw = multilabel_raw()
    stats = prepare.prepare(raw, tmp_path / "store", prepare_cfg(val_fraction=0.2,
                                                                     test_fraction=0.2))
    assert stats["task"] == "multilabel" and stats["classes"] == ["effusion", "mass", "hernia"]
    manifest = pd.read_csv(tmp_path / "store" / store.MANIFEST, keep_default_na=False)
    for split in store.SPLITS:
        labels = np.load(store.labels_path(tmp_path / "store", split))
        assert labels.dtype == np.uint8 and labels.shape == (stats["images"][split], 3)
        ids = manifest.loc[manifest["split"] == split, "source_id"]
        expected = raw.labels[[int(i[3:]) for i in ids]]
        assert np.array_equal(labels, expected)
        assert stats["counts"][split] == dict(zip(raw.classes, labels.sum(axis=0).tolist(),
                                                  strict=True))
        assert stats["counts"][split]["hernia"] > 0  # the rare finding reaches every split
    none = manifest[manifest["class"] == ""]  # images with no finding: rows of zeros
    assert len(none) == int((raw.labels.sum(axis=1) == 0).sum()) > 0
    assert set(none["label"]) == {""}
    multi = manifest[manifest["class"].str.contains("|", regex=False)].iloc[0]
    assert multi["label"].count("|") == multi["class"].count("|")


def test_multilabel_split_grouped_by_patient(tmp_path) -> None:
    raw = multilabel_raw(180, groups=True)
    prepare.prepare(raw, tmp_path / "store", prepare_cfg(val_fraction=0.2,
                                                             test_fraction=0.2))
    manifest = pd.read_csv(tmp_path / "store" / store.MANIFEST, keep_default_na=False)
    manifest["patient"] = [raw.groups[int(i[3:])] for i in manifest["source_id"]]
    assert manifest.groupby("patient")["split"].nunique().max() == 1


def test_multilabel_finding_absent_from_a_split_is_an_error(tmp_path) -> None:
    raw = multilabel_raw()
    raw.splits = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    raw.labels[80:, 2] = 0  # hernia in the official train split only
    with pytest.raises(PipelineError, match="class 'hernia' has no images in split 'val'"):
        prepare.prepare(raw, tmp_path / "store", prepare_cfg())
    raw.labels[:, 2] = 0
    raw.labels[:2, 2] = 1  # without an official split: too few to spread over three
    raw.splits = None
    with pytest.raises(PipelineError, match="cannot split the data by class"):
        prepare.prepare(raw, tmp_path / "store", prepare_cfg())


def test_negative_workers_are_refused(tmp_path, raw_dir) -> None:
    with pytest.raises(PipelineError, match=r"'prepare.workers' must be 0 \(all cores\) or "
                                            r"more, got -1 \(stage prepare\)"):
        prepare.prepare(read(raw_dir), tmp_path / "store", prepare_cfg(workers=-1))
    assert not (tmp_path / "store").exists()
