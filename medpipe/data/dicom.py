"""Decode a DICOM file into display pixels, with pydicom and its pixel-data plugins.

:func:`decode_dicom` returns what :func:`medpipe.data.imageio.decode` promises: uint8 or
uint16 ``(H, W)`` grey or ``(H, W, 3)`` RGB, for one frame. The steps:

1. Read: a file with the DICOM header (128-byte preamble, then ``DICM``) as it is; a
   ``.dcm`` file without it (older files) only if pydicom finds a dataset with pixel data
   in it. A file without a Transfer Syntax UID gets the encoding it was read with, when
   its pixel data is not compressed.
2. Pick one frame (``frame``): ``"middle"`` (frame n // 2, counting from 0), ``"first"``,
   a frame number counting from 1, or ``"refuse"`` multi-frame files. Only that frame is
   decoded; compressed data goes to the installed plugins (GDCM, pylibjpeg with OpenJPEG
   and RLE, pyjpegls), which pydicom picks by transfer syntax.
3. Display: see :mod:`medpipe.data.dicom_display` (modality and VOI transforms,
   MONOCHROME1 and Presentation LUT INVERSE, palette colour, RGB scaled from Bits Stored).

Every failure is one :class:`ImageError` line naming the file: whatever a malformed file
makes pydicom or numpy raise is caught here. Warnings pydicom gives while reading (which
it also logs, so each would print twice) are collected as causes, once each per file, for
the caller to summarise (``notes``), or issued once each as :class:`DicomWarning`.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medpipe.data.dicom_display import display_pixels
from medpipe.data.imageerror import MAX_PIXELS, ImageError, too_many_pixels

DICOM_SUFFIXES = (".dcm",)
HEADER = 132  # the 128-byte preamble and "DICM": what recognises a DICOM file by content
FRAMES = ("middle", "first", "refuse")
# pydicom names the file it reads; here that is a BytesIO ("<no filename>", or an address
# that changes from run to run), and the caller names the file anyway.
_IN_FILE = re.compile(r"\s*(found )?in file <[^>]*>|\s*<_io\.BytesIO object at 0x[0-9a-f]+>")


class DicomWarning(UserWarning):
    """Something pydicom noticed in a file it could still decode."""


def has_dicom_header(head: bytes) -> bool:
    """Whether ``head`` (a file's bytes, or its first 132) starts with the DICOM preamble
    and prefix."""
    return len(head) >= HEADER and head[128:HEADER] == b"DICM"


def is_dicom_file(path: Path | str) -> bool:
    """Whether the file at ``path`` is DICOM by content; reads its first 132 bytes only."""
    try:
        with open(path, "rb") as f:
            return has_dicom_header(f.read(HEADER))
    except OSError:
        return False


def patient_id(path: Path | str) -> str | None:
    """The Patient ID (0010,0020) of the DICOM file at ``path``, without surrounding
    spaces; None when it is absent or empty, or the file's header cannot be read (prepare
    names such a file when it decodes it). Only the header is read, not the pixel data."""
    import pydicom

    with _pydicom_messages():  # a damaged header is prepare's to report, once
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"],
                                 force=not is_dicom_file(path))
            value = ds.get("PatientID")
        except Exception:  # noqa: BLE001 - pydicom raises many types on damaged files
            return None
    text = "" if value is None else str(value).strip()
    return text or None


def check_frame(frame: str | int) -> None:
    """Refuse a frame choice other than ``middle``, ``first``, ``refuse`` or a number >= 1."""
    ok = frame in FRAMES if isinstance(frame, str) else (
        isinstance(frame, int) and not isinstance(frame, bool) and frame >= 1)
    if not ok:
        raise ValueError(f"DICOM frame must be one of {', '.join(FRAMES)} or a frame number "
                         f"from 1, got {frame!r}")


def one_line(text: str) -> str:
    """A library's (multi-line) message as one line: every line kept, joined by '; '."""
    lines = [_IN_FILE.sub("", line).strip() for line in str(text).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    head, rest = lines[0], lines[1:]
    if rest and head.endswith(":"):
        return f"{head} {'; '.join(rest)}"
    return "; ".join(lines)


def decode_dicom(data: bytes, name: str, *, frame: str | int = "middle",
                 notes: list[str] | None = None) -> np.ndarray:
    """Pixels of one frame of the DICOM file ``data``; ``name`` is quoted in errors.

    pydicom's warnings about the file are appended to ``notes`` when given (one line
    each, without the file's name), else issued as :class:`DicomWarning`.
    """
    check_frame(frame)
    with _pydicom_messages() as said:
        try:
            pixels = _decode(data, name, frame)
        except ImageError as e:
            raise _with_warnings(e, said()) from None
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed file can make anything raise
            error = ImageError(f"{name}: not a readable DICOM file "
                               f"({one_line(str(e)) or type(e).__name__})")
            raise _with_warnings(error, said()) from None
        causes = said()
    if notes is not None:
        notes.extend(causes)
    else:
        for cause in causes:
            warnings.warn(cause, DicomWarning, stacklevel=2)
    return pixels


def _with_warnings(e: ImageError, causes: list[str]) -> ImageError:
    """``e``, with what pydicom warned about the file so far: often the cause itself."""
    if e.fatal or not causes:
        return e
    return ImageError(f"{e} (pydicom warned: {'; '.join(causes)})")


@contextmanager
def _pydicom_messages() -> Iterator[Callable[[], list[str]]]:
    """Collect what pydicom warns and logs (at WARNING and above) instead of printing it;
    yields a function giving the messages so far, one line each, each once (pydicom both
    logs and warns most of them)."""
    logged: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        logged.append(record.getMessage())
        return False

    def said() -> list[str]:
        about_file = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        return list(dict.fromkeys(one_line(m) for m in [*logged, *about_file]))

    logger = logging.getLogger("pydicom")
    logger.addFilter(keep)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            yield said
    finally:
        logger.removeFilter(keep)
    for w in caught:  # not about the file (a plugin's DeprecationWarning): as it would be
        if not issubclass(w.category, UserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _decode(data: bytes, name: str, frame: str | int) -> np.ndarray:
    ds = _read(data, name)
    rows, cols = _whole(ds, "Rows", 0, name), _whole(ds, "Columns", 0, name)
    frames = _whole(ds, "NumberOfFrames", 1, name)
    # Checked before decoding: compressed pixel data can announce far more than it holds.
    if rows * cols > MAX_PIXELS:
        raise too_many_pixels(name, rows * cols, f"DICOM frame Rows x Columns {rows} x {cols}")
    if frames < 1:
        raise ImageError(f"{name}: DICOM Number of Frames is {frames}")
    index = _frame_index(frame, frames, name)
    return display_pixels(ds, _pixel_array(ds, index, name), name)


def _read(data: bytes, name: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    header = has_dicom_header(data)
    try:
        # force: a .dcm file without the header may still be a dataset (older files)
        ds = pydicom.dcmread(io.BytesIO(data), force=not header)
    except InvalidDicomError:
        raise ImageError(f"{name}: not a DICOM file (no DICM header)") from None
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on damaged files
        if not header:
            raise ImageError(f"{name}: not a DICOM file (no DICM header)") from None
        raise ImageError(f"{name}: not a readable DICOM file ({one_line(str(e))})") from None
    pixel_keys = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(k in ds for k in pixel_keys):
        what = "DICOM file without pixel data" if header else "not a DICOM file (no DICM header)"
        raise ImageError(f"{name}: {what}")
    if "PixelData" not in ds:
        raise ImageError(f"{name}: DICOM float pixel data (a parametric map) is not supported")
    _set_transfer_syntax(ds, name)
    return ds


def _set_transfer_syntax(ds, name: str) -> None:
    """Give a file without a Transfer Syntax UID the encoding it was read with, which is
    the encoding of its pixel data unless that data is compressed (encapsulated)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    if ds["PixelData"].is_undefined_length:
        raise ImageError(f"{name}: DICOM file without a Transfer Syntax UID and with "
                         f"compressed pixel data: its compression is unknown")
    implicit, little = ds.original_encoding
    syntax = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
              (False, False): ExplicitVRBigEndian}.get((implicit, little))
    if syntax is None:
        raise ImageError(f"{name}: DICOM file without a Transfer Syntax UID, in an "
                         f"unknown encoding")
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax


def _whole(ds, keyword: str, default: int, name: str) -> int:
    """The integer attribute ``keyword``; ``default`` when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        from pydicom.datadict import dictionary_description

        raise ImageError(f"{name}: DICOM {dictionary_description(keyword)} {str(value)!r} is "
                         f"not a whole number") from None


def _frame_index(frame: str | int, frames: int, name: str) -> int | None:
    """The 0-based frame to decode; None for a single-frame file (decode it whole)."""
    if isinstance(frame, int):
        if frame > frames:
            raise ImageError(f"{name}: DICOM frame {frame} asked for, but the file has "
                             f"{frames} frame{'s' if frames > 1 else ''}")
        return frame - 1 if frames > 1 else None
    if frames == 1:
        return None
    if frame == "refuse":
        raise ImageError(f"{name}: multi-frame DICOM ({frames} frames) refused; choose a "
                         f"frame (middle, first or a number) to use one")
    return 0 if frame == "first" else frames // 2


def _pixel_array(ds, index: int | None, name: str) -> np.ndarray:
    """Decode frame ``index`` (all of a single frame), saying what to install when no
    decoder can read the transfer syntax."""
    from pydicom.pixels import get_decoder, pixel_array

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageError(f"{name}: DICOM transfer syntax {syntax.name} ({syntax}) has no "
                         f"pixel-data decoder in pydicom") from None
    missing = "; ".join(decoder.missing_dependencies)
    if not decoder.is_available:
        raise ImageError(f"{name}: no decoder installed for DICOM {syntax.name}; install one "
                         f"of: {missing}{_licence_note(missing)}")
    try:
        return pixel_array(ds, index=index)
    except Exception as e:  # noqa: BLE001 - the plugins raise many types
        also = f"; not installed, might read it: {missing}{_licence_note(missing)}" if (
            missing and syntax.is_compressed) else ""
        raise ImageError(f"{name}: cannot decode the DICOM pixel data ({syntax.name}): "
                         f"{one_line(str(e)) or type(e).__name__}{also}") from None


def _licence_note(missing: str) -> str:
    # The one plugin that reads 12-bit JPEG is GPL: say so where it is suggested.
    return " (pylibjpeg-libjpeg is GPL-3.0 licensed)" if "pylibjpeg-libjpeg" in missing else ""
