"""The DICOM display pipeline: decoded stored values of one frame to grey or RGB pixels.

Grey (MONOCHROME1/2) follows PS3.3 C.11 as pydicom implements it: the modality transform
(:func:`pydicom.pixels.apply_modality_lut`), then the VOI transform (a VOI LUT through
:func:`pydicom.pixels.apply_voi`; else the first Window Center/Width with its VOI LUT
Function, see :func:`window`; else the image's own min..max), mapped to [0, 1] and
inverted for MONOCHROME1 or a Presentation LUT Shape of INVERSE. An empty Window
Center/Width or VOI LUT Sequence counts as absent, as in pydicom's ``apply_voi_lut``.

Colour: PALETTE COLOR through :func:`pydicom.pixels.apply_color_lut`, scaled from the bit
depth of its LUT entries; RGB (YBR arrives converted to RGB) scaled from Bits Stored, so
12 of 16 bits or 32 bits span the full range. 8-bit results stay uint8, deeper ones
become uint16 over 0..65535.
"""

from __future__ import annotations

import warnings

import numpy as np

from medpipe.data.imageerror import ImageError

GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


def display_pixels(ds, arr: np.ndarray, name: str) -> np.ndarray:
    """uint8/uint16 ``(H, W)`` or ``(H, W, 3)`` for the decoded frame ``arr`` of ``ds``."""
    photometric = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    if photometric in GREY and arr.ndim == 2:
        return grey(ds, arr, name)
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        return palette(ds, arr)
    if photometric in COLOUR and arr.ndim == 3 and arr.shape[-1] == 3:
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
        return _scaled(arr, bits)
    raise ImageError(f"{name}: unsupported DICOM photometric interpretation {photometric} "
                     f"for a frame of shape {arr.shape}")


def grey(ds, arr: np.ndarray, name: str) -> np.ndarray:
    """Modality, then VOI transform, inversion where asked; uint16 over 0..65535."""
    from pydicom.pixels import apply_modality_lut

    y = _voi(ds, np.asarray(apply_modality_lut(arr, ds)), name)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1" or (
            _text(ds, "PresentationLUTShape") == "INVERSE"):
        y = 1.0 - y
    return np.round(y * 65535.0).astype(np.uint16)


def _voi(ds, x: np.ndarray, name: str) -> np.ndarray:
    """The VOI transform of modality values ``x``, mapped to [0, 1]."""
    seq = ds.get("VOILUTSequence")
    if seq is not None and len(seq) == 0:
        warnings.warn("empty VOI LUT Sequence: ignored", stacklevel=2)
    if seq and seq[0].get("LUTDescriptor") and "LUTData" in seq[0]:
        return _voi_lut(ds, seq[0], x)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None:
        function = _text(ds, "VOILUTFunction") or "LINEAR"
        return window(x.astype(np.float64), center, width, function, name)
    if "WindowCenter" in ds or "WindowWidth" in ds:
        warnings.warn("empty or lone Window Center/Width: ignored, the image's own range "
                      "is used", stacklevel=2)
    x = x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _voi_lut(ds, item, x: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_voi

    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 2**16
    # Integers in the LUT's input range: pydicom would warn on floats (and truncate
    # 99.9999 to 99) and wrap values past 65535 when it indexes the table.
    x = np.clip(np.rint(x) if x.dtype.kind == "f" else x, first, first + entries - 1)
    y = apply_voi(x.astype(np.int64), ds, index=0).astype(np.float64)
    return np.clip(y / float(2**bits - 1), 0.0, 1.0)


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


def palette(ds, arr: np.ndarray) -> np.ndarray:
    """PALETTE COLOR indices to RGB; the LUT descriptor gives the entries' bit depth."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(arr, ds)[..., :3]  # an alpha LUT, if any, is dropped
    return _scaled(rgb, int(ds.RedPaletteColorLookupTableDescriptor[2]))


def _scaled(arr: np.ndarray, bits: int) -> np.ndarray:
    """Values of ``bits`` bits: uint8 as they are for 8, else uint16 over 0..65535."""
    if bits == 8:
        return np.clip(arr, 0, 255).astype(np.uint8)
    y = np.clip(arr.astype(np.float64) / float(2**bits - 1), 0.0, 1.0)
    return np.round(y * 65535.0).astype(np.uint16)


def _first(value) -> float | None:
    """Window Center/Width may hold several windows; the first is the default one. None
    when empty."""
    if hasattr(value, "__len__") and not isinstance(value, str):  # a MultiValue
        value = value[0] if len(value) else None
    return None if value is None or value == "" else float(value)


def _text(ds, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()
