"""``prepare.channels: auto``: grey data keeps 1 channel, colour data gets 3."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imagefiles import data_cfg, prepare_cfg, save, scan
from PIL import Image

from medpipe.data import channels, prepare, store
from medpipe.data.raw import RawDataset
from medpipe.data.sources.registry import read
from stages.download import download


def colour(seed: int, side: int = 40) -> np.ndarray:
    """An RGB image whose channels differ everywhere (a stained slide, say)."""
    grey = scan(seed, side).astype(int)
    return np.stack([grey, 255 - grey, np.roll(grey, side // 3, axis=0)], axis=-1).astype(
        np.uint8)


def jpeg(image: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=85)
    return np.asarray(Image.open(buf))


def test_colour_means_channels_that_differ() -> None:
    grey = scan(0)
    assert not channels.is_colour(grey)
    assert not channels.is_colour(np.stack([grey] * 3, axis=-1))  # grey saved as RGB
    assert not channels.is_colour(jpeg(np.stack([grey] * 3, axis=-1)))
    marked = np.stack([grey] * 3, axis=-1)
    marked[:3, :3] = (255, 0, 0)  # a red marker on 0.6% of the pixels
    assert not channels.is_colour(marked)
    marked[:10, :10] = (255, 0, 0)  # a coloured area on 6% of them
    assert channels.is_colour(marked)
    assert channels.is_colour(colour(1))
    assert channels.is_colour(colour(1).astype(np.uint16) * 257)  # 16-bit colour


def test_the_sample_is_spread_and_bounded() -> None:
    assert channels.sample(5).tolist() == [0, 1, 2, 3, 4]
    picked = channels.sample(100_000)
    assert len(picked) == channels.SAMPLE and picked[0] == 0 and picked[-1] == 99_999


def arrays(images: np.ndarray, known: int | None) -> RawDataset:
    return RawDataset(classes=["a", "b"], images=images,
                      labels=np.arange(len(images), dtype=np.int64) % 2,
                      ids=[f"i{k}" for k in range(len(images))], channels=known)


@pytest.mark.parametrize(("setting", "known", "expected"), [
    ("auto", 1, 1), ("auto", 3, 3), ("auto", None, 3), (1, 3, 1), (3, 1, 3)])
def test_the_source_decides_unless_set(setting, known, expected) -> None:
    raw = arrays(np.stack([colour(s) for s in range(6)]), known)
    assert channels.resolve(raw, setting) == expected


def folder_of(root, make, n: int = 6):
    for k, cls in enumerate(("benign", "malignant")):
        for i in range(n):
            save(root / cls / f"{i}.png", make(10 * k + i))
    return root


def test_auto_on_a_colour_folder_stores_three_channels(tmp_path) -> None:
    root = folder_of(tmp_path / "slides", colour)
    save(root / "benign" / "grey.png", scan(99, 40))  # one grey image among colour ones
    download(data_cfg(path=str(root)), tmp_path / "raw")
    stats = prepare.prepare(read(tmp_path / "raw"), tmp_path / "store",
                            prepare_cfg(channels="auto"))
    assert stats["channels"] == 3 and len(stats["mean"]) == 3
    assert store.load_split(tmp_path / "store", "train").images.shape[1] == 3


def test_auto_on_grey_saved_as_rgb_stores_one_channel(tmp_path) -> None:
    root = folder_of(tmp_path / "xray", lambda s: np.stack([scan(s, 40)] * 3, axis=-1))
    download(data_cfg(path=str(root)), tmp_path / "raw")
    stats = prepare.prepare(read(tmp_path / "raw"), tmp_path / "store",
                            prepare_cfg(channels="auto"))
    assert stats["channels"] == 1
    stats = prepare.prepare(read(tmp_path / "raw"), tmp_path / "store3",
                            prepare_cfg(channels=3))
    assert stats["channels"] == 3  # as set
