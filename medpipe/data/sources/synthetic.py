"""The embedded default source: generated chest-radiograph-like images (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medpipe import PipelineError
from medpipe.data import phantoms

IMAGES, LABELS = "images.npy", "labels.npy"


def fetch(cfg, out_dir: Path) -> None:
    """Generate ``cfg.n_per_class`` images per class into ``out_dir``."""
    for key in ("name", "url", "md5", "sha256", "patient_pattern", "class_folders"):
        # Set but unread is almost surely a forgotten 'data.source: ...'.
        if getattr(cfg, key) not in (None, {}):
            raise PipelineError(
                f"params.yaml: 'data.{key}' is not read by source synthetic; set it to null "
                f"(stage download)"
            )
    # A subset of the generator's classes, in label order (at least 2 distinct: checked
    # with the params); null: the default data's, normal and opacity.
    classes = list(phantoms.DEFAULT_CLASSES if cfg.classes is None else cfg.classes)
    unknown = [c for c in classes if c not in phantoms.CLASSES]
    if unknown:
        raise PipelineError(
            f"params.yaml: 'data.classes' has unknown class '{unknown[0]}'; valid: "
            f"{', '.join(phantoms.CLASSES)} (stage download)"
        )
    images, labels = phantoms.generate(cfg.n_per_class, classes, cfg.resolution, cfg.seed)
    out_dir.mkdir(parents=True)
    np.save(out_dir / IMAGES, images)
    np.save(out_dir / LABELS, labels)
    meta = {
        "source": "synthetic",
        "classes": classes,
        "count": int(len(labels)),
        "image_shape": list(images.shape[1:]),
        "seed": cfg.seed,
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read(raw_dir: Path, meta: dict):
    from medpipe.data.raw import RawDataset

    images = np.load(raw_dir / IMAGES, mmap_mode="r")
    labels = np.load(raw_dir / LABELS)
    ids = [f"synthetic-{i:06d}" for i in range(len(labels))]
    return RawDataset(classes=list(meta["classes"]), images=images, labels=labels, ids=ids,
                      channels=1)
