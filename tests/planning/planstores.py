"""A tiny prepared store for the planning tests: synthetic images, made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medpipe.data import phantoms, prepare
from medpipe.data.raw import RawDataset
from medpipe.params.sections import PrepareParams


def make_store(root: Path, n_per_class: list[int], size: int = 16, source: int = 24) -> Path:
    """A store of ``n_per_class`` images per class (normal, opacity), ``size`` px."""
    classes = ["normal", "opacity"]
    images, labels = phantoms.generate(max(n_per_class), classes, source, seed=0)
    keep = np.concatenate([np.flatnonzero(labels == k)[:n] for k, n in enumerate(n_per_class)])
    raw = RawDataset(classes, images[keep], labels[keep], [str(i) for i in keep])
    cfg = PrepareParams(seed=0, val_fraction=0.2, test_fraction=0.2, image_size=size,
                        channels=1, on_error="fail", workers=1)
    prepare.prepare(raw, root, cfg)
    return root



PREPARE = PrepareParams(seed=0, val_fraction=0.2, test_fraction=0.2, image_size=16,
                        channels=1, on_error="fail", workers=1)


def make_raw(root: Path, n_per_class: list[int], source: int = 24) -> Path:
    """A raw dataset as the synthetic source writes it: ``n_per_class`` images per class
    (normal, opacity) of ``source`` px."""
    import json

    classes = ["normal", "opacity"]
    images, labels = phantoms.generate(max(n_per_class), classes, source, seed=0)
    keep = np.concatenate([np.flatnonzero(labels == k)[:n] for k, n in enumerate(n_per_class)])
    root.mkdir(parents=True)
    np.save(root / "images.npy", images[np.sort(keep)])
    np.save(root / "labels.npy", labels[np.sort(keep)])
    (root / "dataset.json").write_text(json.dumps({"source": "synthetic", "classes": classes}))
    return root
