"""Small image files for source and decoding tests: PNG/JPEG/... via Pillow, DICOM via
pydicom, and data params for the file-based sources."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from medpipe.params.loading import defaults, parse_section


def data_cfg(**changes):
    """Valid ``data`` params for a file-based source (folder unless told otherwise): the
    defaults, with the classes in the data's own order."""
    values = {**defaults("data"), "source": "folder", "name": None, "url": None, "md5": None,
              "sha256": None, "path": "data/external", "seed": 0, "resolution": 28,
              "n_per_class": 10, "classes": None}
    values.update(changes)
    return parse_section("data", values, stage="download")


def prepare_cfg(**changes):
    values = {**defaults("prepare"), "seed": 0, "val_fraction": 0.25, "test_fraction": 0.25,
              "image_size": 8, "channels": 1, "on_error": "fail", "workers": 1, "folds": 0}
    values.update(changes)
    return parse_section("prepare", values, stage="prepare")


def pixels(seed: int, shape: tuple[int, ...] = (12, 10), dtype=np.uint8) -> np.ndarray:
    high = 65536 if dtype == np.uint16 else 256
    return np.random.default_rng(seed).integers(0, high, size=shape, dtype=dtype)


def save(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` with Pillow, the format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], split: str | None = None,
                seed: int = 0, shape: tuple[int, ...] = (12, 10)) -> Path:
    """``root/[split/]class/i.png`` with distinct random grey images."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            base = root / split if split else root
            save(base / name / f"{i:03d}.png", pixels(seed * 1000 + k * 100 + i, shape))
    return root


def dicom_bytes(arr: np.ndarray, **attrs) -> bytes:
    """An uncompressed (explicit VR little endian) DICOM file holding ``arr``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 8 * arr.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` grey pixels and holds none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def scan(seed: int, side: int = 48) -> np.ndarray:
    """A smooth grey uint8 ``(side, side)`` "scan": waves and blobs drawn from ``seed``,
    distinct for each seed (unlike random noise, it survives resizing and JPEG)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.full((side, side), 110.0)
    for _ in range(4):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        img += rng.uniform(15, 40) * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15)
        img += rng.uniform(-60, 60) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return np.clip(img, 0, 255).astype(np.uint8)
