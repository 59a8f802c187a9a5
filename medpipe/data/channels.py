"""``prepare.channels: auto``: grey data is stored with 1 channel, colour data with 3.

A source that knows its images says so: the synthetic images are grey, and the MedMNIST
table knows which subsets are in colour. For image files (folder, csv) the rule is
deterministic and cheap: up to :data:`SAMPLE` images, spread evenly over the dataset in
its index order, are decoded, and the data is colour when any of them is a colour image
whose channels actually differ, by more than :data:`LEVELS` of 255 levels in at least
:data:`SHARE` of its pixels. Grey radiographs saved as RGB (many are), or with a small
coloured marker burnt in, stay grey. An explicit ``channels: 1`` or ``3`` is taken as set.
"""

from __future__ import annotations

import logging

import numpy as np

from medpipe import PipelineError
from medpipe.data.raw import RawDataset
from medpipe.data.sources.pack import PackedImages

log = logging.getLogger(__name__)

SAMPLE = 256  # images decoded at most: about half a second of decoding
LEVELS = 8  # of 255: JPEG rounding leaves the channels of a grey image within 1-2 levels
SHARE = 0.01  # of the pixels: a coloured marker or annotation burnt in is smaller


def is_colour(pixels: np.ndarray) -> bool:
    """Whether decoded ``pixels`` (H, W) or (H, W, C), uint8 or uint16, are in colour by
    the rule above."""
    if pixels.ndim != 3 or pixels.shape[-1] < 3:
        return False
    full = 65535.0 if pixels.dtype == np.uint16 else 255.0
    rgb = pixels[..., :3].astype(np.float32) * (255.0 / full)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float(np.mean(spread > LEVELS)) >= SHARE


def sample(n: int) -> np.ndarray:
    """The positions looked at: up to SAMPLE of ``n``, evenly spread, first and last included."""
    return np.unique(np.linspace(0, n - 1, min(n, SAMPLE)).round().astype(np.int64))


def resolve(raw: RawDataset, setting: str | int) -> int:
    """The number of channels to store: ``setting`` (``prepare.channels``) when it is 1
    or 3; for ``auto``, what the source says, else what a sample of the images shows."""
    if setting != "auto":
        return int(setting)
    if raw.channels is not None:
        return raw.channels
    images, colour = raw.images, False
    for i in sample(len(images)):
        try:
            pixels = (images.decode(int(i)) if isinstance(images, PackedImages)
                      else np.asarray(images[int(i)]))
        except PipelineError:  # unreadable: prepare.on_error decides when it is converted
            continue
        if is_colour(pixels):
            colour = True
            break
    log.info("prepare.channels auto: %s images, stored with %d channel%s",
             "colour" if colour else "grey", 3 if colour else 1, "s" if colour else "")
    return 3 if colour else 1
