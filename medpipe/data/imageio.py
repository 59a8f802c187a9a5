"""Decode one image file into pixels: PNG, JPEG, BMP, TIFF with Pillow, DICOM with pydicom.

:func:`decode` returns uint8 or uint16 ``(H, W)`` (grey) or ``(H, W, 3)`` (colour), the
forms :func:`medpipe.data.pixels.to_store_pixels` converts. It reads bytes, not paths, so
the prepare stage can decode members of the packed raw dataset (a zip) directly.

The extension picks the decoder. A file with an unknown extension, or none, is DICOM when
its content says so (the 128-byte preamble, then ``DICM``), as DICOM files from scanners
and PACS exports are often named ``IM0001`` or ``1.2.840...``. DICOM decoding (one frame,
the display pipeline, the pixel-data plugins) is in :mod:`medpipe.data.dicom`.

Every failure is an :class:`ImageError` naming the file. ``fatal`` marks a decompression
bomb (more than :data:`MAX_PIXELS` pixels announced), which ``prepare.on_error: skip``
does not skip: such a file is a hazard to be removed, not a damaged scan.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from medpipe import error_line
from medpipe.data.dicom import DICOM_SUFFIXES, decode_dicom, has_dicom_header, is_dicom_file
from medpipe.data.dicom_display import window  # noqa: F401 - a public name, kept here
from medpipe.data.imageerror import MAX_PIXELS, ImageError, too_many_pixels

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUFFIXES = PILLOW_SUFFIXES + DICOM_SUFFIXES


# Files and folders that file managers and archivers leave beside a user's files (thumbnail
# caches, folder settings, macOS resource forks): never images or classes, and present in
# many datasets zipped or browsed on a desktop. Windows names are case-insensitive; every
# name starting with '.' (.DS_Store, ._* AppleDouble files, other hidden files) is litter.
OS_LITTER = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx"})


def is_supported(name: str) -> bool:
    """Whether the extension of ``name`` is one :func:`decode` reads (see also
    :func:`is_image_file`, which recognises DICOM files of any name)."""
    return Path(name).suffix.lower() in SUFFIXES


def is_image_file(path: Path | str) -> bool:
    """Whether :func:`decode` reads the file at ``path``: by its extension, else by its
    content (DICOM; only the first 132 bytes are read)."""
    return is_supported(str(path)) or is_dicom_file(path)


def is_litter(name: str) -> bool:
    """Whether the file or folder called ``name`` is operating-system litter (see
    :data:`OS_LITTER`), to be passed over when scanning a dataset folder."""
    return name.startswith(".") or name.lower() in OS_LITTER


def unsupported_message(name: str) -> str:
    suffix = Path(name).suffix
    kind = f"file type '{suffix}'" if suffix else (
        "file without an extension, and not DICOM (no 'DICM' at byte 128)")
    return f"{name}: unsupported {kind}; supported: {', '.join(SUFFIXES)}"


def read_image(path: Path | str, *, frame: str | int = "middle") -> np.ndarray:
    """Decode the image file at ``path`` (see :func:`decode`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return decode(data, str(path), frame=frame)


def decode(data: bytes, name: str, *, frame: str | int = "middle",
           notes: list[str] | None = None) -> np.ndarray:
    """Pixels of the image file whose bytes are ``data``; ``name`` (its path) picks the
    decoder by extension and is quoted in errors.

    For DICOM: ``frame`` picks the frame of a multi-frame file (``"middle"``, ``"first"``,
    a number from 1, or ``"refuse"``), and pydicom's warnings about the file go to
    ``notes`` when given (see :func:`medpipe.data.dicom.decode_dicom`).
    """
    suffix = Path(name).suffix.lower()
    if suffix in DICOM_SUFFIXES or (suffix not in PILLOW_SUFFIXES
                                    and has_dicom_header(data)):
        return decode_dicom(data, name, frame=frame, notes=notes)
    if suffix in PILLOW_SUFFIXES:
        return _decode_pillow(data, name)
    raise ImageError(unsupported_message(name))


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
                raise too_many_pixels(name, width * height, f"image {width} x {height}")
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
