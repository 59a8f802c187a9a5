"""Decode one image file into pixels: PNG, JPEG, BMP, TIFF with Pillow, DICOM with pydicom.

:func:`decode` returns uint8 or uint16 ``(H, W)`` (grey) or ``(H, W, 3)`` (colour), the
forms :func:`medpipe.data.pixels.to_store_pixels` converts. It reads bytes, not paths, so
the prepare stage can decode members of the packed raw dataset (a zip) directly.

DICOM grey images become uint16 after the standard display pipeline: the modality
transform (Rescale Slope/Intercept or a Modality LUT, e.g. to Hounsfield units), then the
VOI transform (a VOI LUT, else the first Window Center/Width, else the image's own
min..max), then MONOCHROME1 (white = low values) is inverted so that, as in MONOCHROME2,
high values are bright.

Every failure is an :class:`ImageError` naming the file. ``fatal`` marks a decompression
bomb (more than :data:`MAX_PIXELS` pixels announced), which ``prepare.on_error: skip``
does not skip: such a file is a hazard to be removed, not a damaged scan.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from medpipe import PipelineError, error_line

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm",)
SUFFIXES = PILLOW_SUFFIXES + DICOM_SUFFIXES
# Pillow's own warning threshold (about 89.5 Mpx, a 9459 x 9459 image): far above any
# radiograph, far below what would exhaust memory once decoded.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class ImageError(PipelineError):
    """An image file that cannot be used; ``fatal``: refuse even under on_error: skip."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


# Files and folders that file managers and archivers leave beside a user's files (thumbnail
# caches, folder settings, macOS resource forks): never images or classes, and present in
# many datasets zipped or browsed on a desktop. Windows names are case-insensitive; every
# name starting with '.' (.DS_Store, ._* AppleDouble files, other hidden files) is litter.
OS_LITTER = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx"})


def is_supported(name: str) -> bool:
    return Path(name).suffix.lower() in SUFFIXES


def is_litter(name: str) -> bool:
    """Whether the file or folder called ``name`` is operating-system litter (see
    :data:`OS_LITTER`), to be passed over when scanning a dataset folder."""
    return name.startswith(".") or name.lower() in OS_LITTER


def unsupported_message(name: str) -> str:
    suffix = Path(name).suffix
    kind = f"file type '{suffix}'" if suffix else "file without an extension"
    return f"{name}: unsupported {kind}; supported: {', '.join(SUFFIXES)}"


def read_image(path: Path | str) -> np.ndarray:
    """Decode the image file at ``path`` (see :func:`decode`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return decode(data, str(path))


def decode(data: bytes, name: str) -> np.ndarray:
    """Pixels of the image file whose bytes are ``data``; ``name`` (its path) picks the
    decoder by extension and is quoted in errors."""
    suffix = Path(name).suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return _decode_dicom(data, name)
    if suffix in PILLOW_SUFFIXES:
        return _decode_pillow(data, name)
    raise ImageError(unsupported_message(name))


def _bomb(name: str, pixels: int, what: str) -> ImageError:
    return ImageError(
        f"{name}: {what} of {pixels:,} pixels is over the limit of {MAX_PIXELS:,} "
        f"(decompression bomb?); remove the file", fatal=True)


def _decode_pillow(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_PIXELS and raises above twice that; we refuse both.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise _bomb(name, width * height, f"image {width} x {height}")
            img.load()
            return _pillow_pixels(img, name)
    except Image.DecompressionBombError:  # Pillow's own check, at twice MAX_PIXELS
        raise ImageError(f"{name}: image of more than {2 * MAX_PIXELS:,} pixels is over the "
                         f"limit of {MAX_PIXELS:,} (decompression bomb?); remove the file",
                         fatal=True) from None
    except UnidentifiedImageError:  # its message quotes a BytesIO's address: not stable
        raise ImageError(f"{name}: not a readable image (unrecognised content)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{name}: not a readable image ({error_line(e)})") from None


def _pillow_pixels(img, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(img).astype(np.uint16)
    if mode == "I":  # 32-bit container; 16-bit PNGs often open this way
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(f"{name}: 32-bit intensities are not supported")
        return arr.astype(np.uint16)
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in ("1", "LA"):  # bilevel; grey with alpha (alpha dropped)
        return np.asarray(img.convert("L"))
    if mode in ("P", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"))  # a palette means its colours
    raise ImageError(f"{name}: unsupported image mode {mode}")


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        raise ImageError(f"{name}: not a DICOM file (no DICM header)") from None
    except Exception as e:  # pydicom raises many types on damaged files
        raise ImageError(f"{name}: not a readable DICOM file ({error_line(e)})") from None
    if "PixelData" not in ds:
        raise ImageError(f"{name}: DICOM file without pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    # Checked before decoding: compressed pixel data can announce far more than it holds.
    if rows * cols * frames > MAX_PIXELS:
        raise _bomb(name, rows * cols * frames, f"DICOM Rows x Columns x frames {rows} x "
                                               f"{cols} x {frames}")
    if frames != 1:
        raise ImageError(f"{name}: multi-frame DICOM ({frames} frames) is not supported")
    try:
        arr = ds.pixel_array
    except Exception as e:
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID", None) if meta is not None else None
        what = f" ({syntax.name})" if syntax is not None else ""
        raise ImageError(f"{name}: cannot decode the DICOM pixel data{what}: "
                         f"{error_line(e)}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _dicom_grey(ds, arr, photometric == "MONOCHROME1", name)
    if arr.ndim == 3 and arr.shape[-1] == 3 and photometric in ("RGB", "YBR_FULL",
                                                              "YBR_FULL_422", "YBR_ICT",
                                                              "YBR_RCT"):
        # pydicom converts YBR to RGB; colour images have no windowing.
        return arr.astype(np.uint8) if arr.dtype.itemsize == 1 else arr.astype(np.uint16)
    raise ImageError(f"{name}: unsupported DICOM photometric interpretation {photometric}")


def _dicom_grey(ds, arr: np.ndarray, monochrome1: bool, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    x = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        y = np.asarray(apply_voi_lut(x, ds, prefer_lut=True), dtype=np.float64)
        y = y / float(2**bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        y = window(x, _first(ds.WindowCenter), _first(ds.WindowWidth),
                   str(ds.get("VOILUTFunction", "LINEAR")).upper(), name)
    else:  # no display window given: the image's own range
        lo, hi = float(x.min()), float(x.max())
        y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    y = np.clip(y, 0.0, 1.0)
    if monochrome1:
        y = 1.0 - y
    return np.round(y * 65535.0).astype(np.uint16)


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR",
           name: str = "") -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2) mapped to [0, 1]."""
    if function == "LINEAR":
        if width < 1:
            raise ImageError(f"{name}: Window Width {width} must be at least 1 for LINEAR")
        if width == 1:  # the standard's limit: a threshold
            return (x > center - 0.5).astype(np.float64)
        return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if width <= 0:
        raise ImageError(f"{name}: Window Width {width} must be positive")
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    raise ImageError(f"{name}: unsupported VOI LUT Function {function}")


def _first(value) -> float:
    """Window Center/Width may hold several windows; the first is the default one."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)
