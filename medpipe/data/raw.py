"""What a data source hands to the prepare stage: :class:`RawDataset`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medpipe import PipelineError

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
    holds patient ids where they are known, and ``patients_from`` where they come from
    (a manifest column, a file-name pattern, the DICOM Patient ID). ``ids`` names each
    image in the manifest.
    ``attributes`` holds the source's own columns per image (a CSV manifest's columns
    beyond those it reads, e.g. sex or site), carried into the store's manifest.
    ``channels`` is 1 (grey) or 3 (colour) where the source knows it (synthetic,
    MedMNIST); None: ``prepare.channels: auto`` decides from the images.
    """

    classes: list[str]
    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    splits: np.ndarray | None = None
    groups: np.ndarray | None = None
    attributes: pd.DataFrame | None = None
    channels: int | None = None
    patients_from: str | None = None

    @property
    def multilabel(self) -> bool:
        return np.asarray(self.labels).ndim == 2


def order_classes(found: list[str], wanted: list[str] | None, stage: str) -> list[str]:
    """The label order: ``wanted`` (``data.classes``), which must name every class
    ``found`` in the data and no other; None keeps ``found`` (the source's own order)."""
    if wanted is None:
        return list(found)
    unknown = [c for c in wanted if c not in found]
    missing = [c for c in found if c not in wanted]
    if unknown or missing:
        what = (f"names '{unknown[0]}', which is not in the data" if unknown
                else f"leaves out class '{missing[0]}'")
        names = ", ".join(f"'{c}'" for c in found)  # quoted: a name may hold a comma
        raise PipelineError(f"params.yaml: 'data.classes' {what}; classes found: {names} "
                            f"(list them all in the order wanted, or set 'data.classes' to "
                            f"null for this order) (stage {stage})")
    return list(wanted)
