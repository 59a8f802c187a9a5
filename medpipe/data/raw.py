"""What a data source hands to the prepare stage: :class:`RawDataset`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

META_FILE = "dataset.json"


@dataclass
class RawDataset:
    """What a source hands to the prepare stage.

    ``images`` is ``(N, H, W)`` or ``(N, H, W, C)``, uint8 or uint16 (anything indexable
    by an integer array, e.g. a memory map), or, for the file-based sources, a
    :class:`~medpipe.data.sources.pack.PackedImages` that decodes one file at a time.
    ``labels`` is int64 ``(N,)`` (one class per image) or uint8 ``(N, K)`` multi-hot
    (multi-label: any number of the K ``classes`` per image, a row of zeros for none).
    ``splits`` holds official split names ("train"/"val"/"test") where the source
    defines them (val may be absent: prepare then carves it out of train); ``groups``
    holds patient ids where they are known. ``ids`` names each image in the manifest.
    """

    classes: list[str]
    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    splits: np.ndarray | None = None
    groups: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return np.asarray(self.labels).ndim == 2
