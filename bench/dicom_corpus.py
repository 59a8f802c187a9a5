"""DICOM corpus: every file with pixel data in pydicom's test files and in pydicom-data,
decoded as the prepare stage decodes it and compared with pydicom's reference display
pipeline; prints the counts (decoded, refused by cause) and, with ``--files``, one line
per file.

    python3 -m uv run python bench/dicom_corpus.py
    python3 -m uv run python bench/dicom_corpus.py --files

The files are the installed ones (``pydicom/data/test_files`` and pydicom-data's
``data_store/data``, a dev dependency); nothing is downloaded. A file is in the corpus when
pydicom reads a Pixel Data element from it, or when its bytes hold the Pixel Data tag
(7FE0,0010) but pydicom cannot read that far (a damaged file).

The reference uses pydicom alone: ``pixel_array`` (of the middle frame, n // 2, counting
from 0), ``apply_modality_lut``, ``apply_voi_lut`` (a VOI LUT first) mapped to [0, 1] by
the LUT's bit depth or by ``apply_windowing``'s own output range (else the image's
min..max), MONOCHROME1 inverted; ``apply_color_lut`` for PALETTE COLOR, scaled by the LUT
entries' bit depth; RGB scaled by Bits Stored; then 8 bits, as the store holds. A decoded
file agrees when no pixel differs by more than 1 of 255.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medpipe.data.imageio import ImageError, decode

TOLERANCE = 1  # of 255
PIXEL_DATA_TAG = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # little, big endian
# Refusals by cause: the first pattern that matches the message names it.
CAUSES = (
    ("no installed decoder reads it (12-bit JPEG needs pylibjpeg-libjpeg, GPL)",
     r"not installed, might read it|no decoder installed|has no pixel-data decoder"),
    ("required image attributes missing", r"Missing required element"),
    ("pixel data damaged or truncated", r"cannot decode the DICOM pixel data|End of file"),
    ("malformed attribute value", r"is not a whole number|not a readable DICOM file"),
    ("not a DICOM image (no header, no pixel data)", r"not a DICOM file|without pixel data"),
    ("multi-frame, refused by the frame choice", r"multi-frame DICOM"),
)


@dataclass(frozen=True)
class Row:
    file: str  # folder label / path inside it
    outcome: str  # decoded | refused | differs
    detail: str  # the refusal, or how it differs
    cause: str = ""  # for a refusal: its CAUSES label; for a decoded file: its kind


def folders() -> dict[str, Path]:
    import data_store
    import pydicom

    return {"pydicom": Path(pydicom.__file__).parent / "data" / "test_files",
            "pydicom-data": Path(data_store.__file__).parent / "data"}


def corpus() -> list[tuple[str, Path]]:
    """(label, path) of every corpus file, in a fixed order."""
    import pydicom

    def pydicom_finds_pixel_data(path: Path) -> bool:  # e.g. in a deflated dataset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return "PixelData" in pydicom.dcmread(path, force=True, defer_size=1024)
            except Exception:  # noqa: BLE001 - not DICOM, or damaged before its pixel data
                return False

    found = []
    for label, folder in folders().items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if any(tag in data for tag in PIXEL_DATA_TAG) or pydicom_finds_pixel_data(path):
                found.append((f"{label}/{path.relative_to(folder).as_posix()}", path))
    return found


def reference(path: Path) -> tuple[np.ndarray, str]:
    """The 8-bit display pixels of ``path``'s middle frame, by pydicom alone, and the
    kind of image (grey, RGB or YBR, palette; single or multi-frame)."""
    import pydicom
    from pydicom import pixels

    ds = pydicom.dcmread(path, force=True)
    if not ds.get("file_meta", {}).get("TransferSyntaxUID"):  # as pydicom's docs advise
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                          pydicom.uid.ExplicitVRLittleEndian if little else
                                          pydicom.uid.ExplicitVRBigEndian)
    frames = int(ds.get("NumberOfFrames") or 1)
    arr = pixels.pixel_array(ds, index=frames // 2 if frames > 1 else None)
    photometric = ds.PhotometricInterpretation
    kind = ("grey" if photometric.startswith("MONOCHROME") else
            "palette colour" if photometric == "PALETTE COLOR" else "RGB or YBR")
    kind += ", multi-frame (middle frame)" if frames > 1 else ", one frame"
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        y = pixels.apply_voi_lut(pixels.apply_modality_lut(arr, ds), ds, prefer_lut=True)
        seq = ds.get("VOILUTSequence")
        if seq and None not in (seq[0].get("LUTDescriptor"), seq[0].get("LUTData")):
            y = y / (2.0 ** seq[0].LUTDescriptor[2] - 1)
        elif None not in (ds.get("WindowCenter"), ds.get("WindowWidth")):
            lo, hi = pixels.apply_windowing(np.array([-1e30, 1e30]), ds)  # its output range
            y = (y - lo) / (hi - lo)
        else:
            lo, hi = float(y.min()), float(y.max())
            y = (y - lo) / (hi - lo) if hi > lo else np.zeros(y.shape)
        if photometric == "MONOCHROME1":
            y = 1.0 - y
    elif photometric == "PALETTE COLOR":
        bits = ds.RedPaletteColorLookupTableDescriptor[2]
        y = pixels.apply_color_lut(arr, ds)[..., :3] / (2.0**bits - 1)
    else:
        y = arr / (2.0**ds.BitsStored - 1)
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8), kind


def ours(data: bytes, name: str) -> np.ndarray:
    """The 8-bit pixels of the decoder the prepare stage uses (middle frame)."""
    arr = decode(data, name, notes=[])
    if arr.dtype == np.uint16:
        return np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return arr


def check(label: str, path: Path) -> Row:
    """One file: decoded and agreeing with the reference, refused, or differing."""
    try:
        got = ours(path.read_bytes(), label)
    except ImageError as e:
        message = str(e)
        cause = next((c for c, pattern in CAUSES if re.search(pattern, message)), "other")
        return Row(label, "refused", message, cause)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            want, kind = reference(path)
    except Exception as e:  # noqa: BLE001 - we decoded what pydicom alone cannot
        return Row(label, "differs", f"the reference fails: {type(e).__name__}: {e}")
    if got.shape != want.shape:
        return Row(label, "differs", f"shape {got.shape}, reference {want.shape}")
    worst = int(np.abs(got.astype(int) - want.astype(int)).max(initial=0))
    if worst > TOLERANCE:
        return Row(label, "differs", f"up to {worst} of 255 from the reference")
    return Row(label, "decoded", f"{kind}, {got.shape}, within {worst} of 255", kind)


def run() -> list[Row]:
    return [check(label, path) for label, path in corpus()]


def table(rows: list[Row]) -> str:
    """The counts as a Markdown table: decoded, refused by cause, differing."""
    lines = ["| outcome | files |", "|---|---:|"]
    outcomes = Counter(r.outcome for r in rows)
    for kind, n in sorted(Counter(r.cause for r in rows if r.outcome == "decoded").items()):
        lines.append(f"| decoded: {kind} | {n} |")
    lines.append(f"| **decoded, each within {TOLERANCE} of 255 of pydicom's reference** "
                 f"| **{outcomes['decoded']}** |")
    for cause, n in sorted(Counter(r.cause for r in rows if r.outcome == "refused").items(),
                           key=lambda item: (-item[1], item[0])):
        lines.append(f"| refused: {cause} | {n} |")
    lines.append(f"| differs from the reference | {outcomes['differs']} |")
    lines.append(f"| **total** | **{len(rows)}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", action="store_true", help="also print one line per file")
    args = parser.parse_args()
    rows = run()
    if args.files:
        for r in rows:
            print(f"{r.outcome:8} {r.file}: {r.detail}")
        print()
    print(table(rows))


if __name__ == "__main__":
    main()
