"""Predict image files: find them, prepare them exactly as the prepare stage prepared the
training images (the preprocessing recorded in the model file), and score them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medpipe import PipelineError, error_line
from medpipe.data import imageio
from medpipe.data.imageio import read_image  # the decoder prepare uses: no train/serve skew
from medpipe.data.pixels import to_store_pixels
from medpipe.evaluation import metrics
from medpipe.inference import ensemble, predictor
from medpipe.models import checkpoint
from medpipe.task import Task
from medpipe.utils import devices
from medpipe.utils.progress import Tracker

CHUNK = 64  # images per forward pass; bounds memory however many files are given


def find_images(source: Path) -> list[Path]:
    """The image paths named by ``source``: a file, a folder or a CSV with a path column."""
    if source.is_dir():
        found = sorted(p for p in source.rglob("*")
                       if p.is_file() and not imageio.is_litter(p.name)
                       and imageio.is_image_file(p))
        if not found:
            raise PipelineError(f"{source}: no PNG, JPEG, BMP, TIFF or DICOM images in this "
                                "folder")
        return found
    if not source.exists():
        raise PipelineError(f"{source}: no such file or folder")
    if source.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(source)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise PipelineError(f"{source}: not a readable CSV ({error_line(e)})") from None
        if "path" not in table.columns:
            raise PipelineError(f"{source}: no 'path' column (columns: "
                                f"{', '.join(map(str, table.columns))})")
        return [p if p.is_absolute() else source.parent / p
                for p in (Path(str(v)) for v in table["path"])]
    return [source]


def prepare_image(pixels: np.ndarray, channels: int, image_size: int) -> torch.Tensor:
    """One image as the model saw its training data: ``(channels, S, S)`` float in [0, 1].

    The same steps as the prepare stage (:func:`medpipe.data.prepare.prepare`): channel
    conversion, antialiased resize, then rounding to 8 bits, which the store applies and
    the model was therefore trained on.
    """
    return to_store_pixels(pixels[None], channels, image_size)[0].float() / 255.0


def batches(paths: list[Path], channels: int, image_size: int, frame: str | int = "middle"
            ) -> Iterator[tuple[list[Path], torch.Tensor]]:
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        yield chunk, torch.stack([prepare_image(read_image(p, frame=frame), channels,
                                                image_size) for p in chunk])


@torch.inference_mode()
def predict_files(model_path: Path, paths: list[Path],
                  threshold: float | list[float] | None = None, device: str = "cpu",
                  tta: str = "none", frame: str | int = "middle") -> tuple[pd.DataFrame, Task]:
    """Probabilities and the decision for each image in ``paths``, and the model's task
    (which says how the decision was made). ``threshold``: two classes, the
    positive-class threshold; multi-label, one for all findings or a list with one per
    finding (default 0.5). ``tta``: the flipped views averaged, as the evaluate stage's
    ``evaluate.tta``; ``frame``: of a multi-frame DICOM file, as ``prepare.dicom_frame``."""
    dev = devices.resolve_device(device)
    model, ckpt = ensemble.load_model(model_path, dev)  # weights_only: never runs code
    classes, pre = ckpt["classes"], ckpt["preprocess"]
    task = checkpoint.task_of(ckpt)
    if threshold is not None and not task.thresholded:
        raise PipelineError(f"--threshold applies to two classes; {model_path} has "
                            f"{len(classes)} (argmax is used)")
    if isinstance(threshold, list) and len(threshold) != len(classes):
        raise PipelineError(f"{len(threshold)} thresholds for the {len(classes)} findings of "
                            f"{model_path}")
    rows, probs = [], []
    with Tracker(len(paths), "predict", unit="image") as bar:
        for chunk, x in batches(paths, pre["channels"], pre["image_size"], frame):
            probs.append(predictor.view_probabilities(model, x.to(dev), task, tta).cpu().numpy())
            rows += [str(p) for p in chunk]
            bar.update(len(chunk))
    p = np.concatenate(probs) if probs else np.zeros((0, len(classes)))
    table = pd.DataFrame({"path": rows})
    for k, name in enumerate(classes):
        table[f"p_{name}"] = p[:, k].round(8)
    return DECISIONS[task.name](table, p, task, threshold), task


def _decide_class(table: pd.DataFrame, p: np.ndarray, task: Task,
                  threshold: float | None) -> pd.DataFrame:
    decided = metrics.decide(p, threshold, positive=task.positive_index)
    table["predicted"] = [task.classes[k] for k in decided]
    return table


def _decide_findings(table: pd.DataFrame, p: np.ndarray, task: Task,
                     threshold: float | list[float] | None) -> pd.DataFrame:
    classes = task.classes
    t = np.broadcast_to(np.asarray(0.5 if threshold is None else threshold, dtype=np.float64),
                        (len(classes),))
    called = p >= t[None, :]
    for k, name in enumerate(classes):
        table[f"pred_{name}"] = called[:, k].astype(np.int64)
    table["predicted"] = ["|".join(n for n, c in zip(classes, row, strict=True) if c) or "none"
                          for row in called]
    return table


# The decision per image: the class (argmax, or the positive class's threshold), or the
# findings called, one column each.
DECISIONS = {"multiclass": _decide_class, "multilabel": _decide_findings}
