"""Looking at the data before training on it: a grid of stored training images per class,
and the images per class and split as plot data. The prepare stage writes both from the
finished store, as DVC plots (``dvc plots show``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medpipe.data import store
from medpipe.utils.files import atomic_path, write_json

COLUMNS = 8  # images per class
TILE = (64, 128)  # a tile is the stored image, enlarged or reduced to within these px
LABEL = 160  # px of the class names' column
PAD = 2


def sample(labels: np.ndarray, k: int, columns: int = COLUMNS) -> np.ndarray:
    """Rows of class ``k`` (multi-label: with finding ``k``), at most ``columns`` spread
    evenly over them; the same store gives the same sample."""
    rows = np.flatnonzero(labels[:, k] if labels.ndim == 2 else labels == k)
    if len(rows) <= columns:
        return rows
    return rows[np.linspace(0, len(rows) - 1, columns).round().astype(np.int64)]


def _tile(image: np.ndarray, side: int) -> Image.Image:
    """One stored image (C, S, S) as a PIL image of ``side`` px: enlarged pixel for pixel,
    reduced with a box filter."""
    arr = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    tile = Image.fromarray(np.ascontiguousarray(arr))
    if tile.size[0] == side:
        return tile
    return tile.resize((side, side), Image.NEAREST if side > tile.size[0] else Image.BOX)


def grid(store_dir: Path | str, columns: int = COLUMNS) -> Image.Image:
    """One row per class (per finding for multi-label data): its name, its number of
    training images, and up to ``columns`` of them as stored."""
    stats = store.read_stats(store_dir)
    train = store.load_split(store_dir, "train")
    classes, size, channels = stats["classes"], stats["image_size"], stats["channels"]
    side = min(max(size, TILE[0]), TILE[1])
    canvas = Image.new("L" if channels == 1 else "RGB",
                       (LABEL + columns * (side + PAD) + PAD, len(classes) * (side + PAD) + PAD),
                       255 if channels == 1 else (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=13)
    ink = 0 if channels == 1 else (0, 0, 0)
    for k, name in enumerate(classes):
        top = PAD + k * (side + PAD)
        for j, row in enumerate(sample(train.labels, k, columns)):
            canvas.paste(_tile(np.asarray(train.images[row]), side),
                         (LABEL + PAD + j * (side + PAD), top))
        text = f"{name} ({stats['counts']['train'][name]:,} in train)"
        while len(text) > 4 and draw.textlength(text, font=font) > LABEL - 8:
            text = text[:-2] + "…"
        draw.text((4, top + side // 2), text, fill=ink, font=font, anchor="lm")
    return canvas


def counts_rows(stats: dict) -> list[dict]:
    """The images per split and class (per finding for multi-label data), one row each,
    for a bar plot."""
    return [{"split": split, "class": name, "count": n}
            for split, counts in stats["counts"].items() for name, n in counts.items()]


def write_grid(store_dir: Path | str, path: Path | str) -> None:
    """Write the :func:`grid` of the store at ``store_dir`` as a PNG at ``path``."""
    with atomic_path(path) as tmp:
        grid(store_dir).save(tmp, format="PNG")


def write_counts(store_dir: Path | str, path: Path | str) -> None:
    """Write the :func:`counts_rows` of the store at ``store_dir`` as JSON at ``path``."""
    write_json(path, counts_rows(store.read_stats(store_dir)))
