"""The error every image decoder raises, and the pixel limit against decompression bombs.

A leaf below :mod:`medpipe.data.imageio` (Pillow formats) and :mod:`medpipe.data.dicom`,
so that both raise the same :class:`ImageError` without importing each other.
"""

from __future__ import annotations

from medpipe import PipelineError

# Pillow's own warning threshold (about 89.5 Mpx, a 9459 x 9459 image): far above any
# radiograph, far below what would exhaust memory once decoded.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class ImageError(PipelineError):
    """An image file that cannot be used; ``fatal``: refuse even under on_error: skip."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


def too_many_pixels(name: str, pixels: int, what: str) -> ImageError:
    """The fatal refusal of a file announcing more than :data:`MAX_PIXELS` pixels."""
    return ImageError(
        f"{name}: {what} of {pixels:,} pixels is over the limit of {MAX_PIXELS:,} "
        f"(decompression bomb?); remove the file", fatal=True)
