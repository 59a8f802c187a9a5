"""Predict image files with a trained model; not a pipeline stage.

    python -m medpipe.predict --model models/model.pt --out predictions.csv IMAGES
    python -m medpipe.predict --model models/model.pt --metrics metrics/evaluate.json \
        --out predictions.csv IMAGES

``IMAGES`` is an image file, a folder (every PNG/JPEG/BMP/TIFF in it and its subfolders,
sorted) or a CSV with a ``path`` column (relative paths are relative to the CSV). 8- or
16-bit grey, RGB, RGBA and palette images are read with Pillow and prepared exactly as the
prepare stage prepared the training images (the preprocessing recorded in the model
file): channel conversion, antialiased resize, quantisation to 8 bits.

The CSV holds one row per image: ``path``, ``p_<class>`` for each class and
``predicted``. Two classes: the positive class (the second) is predicted when its
probability is ``>=`` the threshold: ``--threshold``, else the threshold the evaluate
stage chose (``threshold.value`` in ``--metrics``, refused if that file was written for
another model), else 0.5. More classes: argmax.

A multi-label model gives each finding its own sigmoid probability ``p_<finding>`` and
call ``pred_<finding>`` (1 when the probability is ``>=`` that finding's threshold:
``--threshold`` for all, else the per-finding thresholds the evaluate stage chose, else
0.5); ``predicted`` lists the called findings joined by ``|`` (``none`` if none).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medpipe import PipelineError, cli, engine, error_line, imageio, metrics, models
from medpipe.fsutil import atomic_path, file_digest
from medpipe.imageio import read_image  # the decoder prepare uses: no train/serve skew
from medpipe.preprocess import to_store_pixels

log = logging.getLogger(__name__)

CHUNK = 64  # images per forward pass; bounds memory however many files are given


def find_images(source: Path) -> list[Path]:
    """The image paths named by ``source``: a file, a folder or a CSV with a path column."""
    if source.is_dir():
        found = sorted(p for p in source.rglob("*")
                       if p.is_file() and imageio.is_supported(p.name)
                       and not imageio.is_litter(p.name))
        if not found:
            raise PipelineError(f"{source}: no PNG, JPEG, BMP or TIFF images in this folder")
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

    The same steps as the prepare stage (:func:`medpipe.preprocess.prepare`): channel
    conversion, antialiased resize, then rounding to 8 bits, which the store applies and
    the model was therefore trained on.
    """
    return to_store_pixels(pixels[None], channels, image_size)[0].float() / 255.0


def batches(paths: list[Path], channels: int, image_size: int
            ) -> Iterator[tuple[list[Path], torch.Tensor]]:
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        yield chunk, torch.stack([prepare_image(read_image(p), channels, image_size)
                                  for p in chunk])


def read_metrics(path: Path) -> dict:
    """The evaluate stage's summary (metrics/evaluate.json), or one clear error."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run the evaluate stage first") from None
    except json.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        raise PipelineError(f"{path}: not an evaluate metrics file")
    return summary


def threshold_from_metrics(path: Path, model_path: Path, summary: dict | None = None
                           ) -> float | list[float] | None:
    """The threshold the evaluate stage chose for this very model (None: argmax), or for
    a multi-label model the list of per-finding thresholds, in finding order.
    ``summary``: ``path`` already read."""
    summary = read_metrics(path) if summary is None else summary
    try:
        digest = summary["model_sha256"]
        if summary.get("task") == "multilabel":
            per_label = summary["threshold"]["per_label"]
            value = [float(per_label[name]["value"]) for name in summary["findings"]]
        else:
            value = summary["threshold"]["value"]
    except (KeyError, TypeError):
        raise PipelineError(f"{path}: not an evaluate metrics file (no threshold.value "
                            "or model_sha256)") from None
    if digest != file_digest(model_path):
        raise PipelineError(f"{path}: its threshold was chosen for another model than "
                            f"{model_path}; rerun the evaluate stage or pass --threshold")
    return value


def tta_from_metrics(path: Path, summary: dict) -> str:
    """The test-time augmentation the evaluate stage used (``none`` in files made before
    it had one), so predictions here match the reported figures."""
    tta = summary.get("tta", "none")
    if tta not in engine.TTA_VIEWS:
        raise PipelineError(f"{path}: unknown tta {tta!r}; expected one of "
                            f"{', '.join(engine.TTA_VIEWS)}")
    return tta


@torch.inference_mode()
def predict_files(model_path: Path, paths: list[Path],
                  threshold: float | list[float] | None = None, device: str = "cpu",
                  tta: str = "none") -> pd.DataFrame:
    """Probabilities and the decision for each image in ``paths``. ``threshold``: two
    classes, the positive-class threshold; multi-label, one for all findings or a list
    with one per finding (default 0.5). ``tta``: the flipped views averaged, as the
    evaluate stage's ``evaluate.tta``."""
    dev = engine.resolve_device(device)
    model, ckpt = models.load_checkpoint(model_path, dev)  # weights_only: never runs code
    classes, pre = ckpt["classes"], ckpt["preprocess"]
    multilabel = models.task_of(ckpt) == "multilabel"
    if threshold is not None and len(classes) != 2 and not multilabel:
        raise PipelineError(f"--threshold applies to two classes; {model_path} has "
                            f"{len(classes)} (argmax is used)")
    if isinstance(threshold, list) and len(threshold) != len(classes):
        raise PipelineError(f"{len(threshold)} thresholds for the {len(classes)} findings of "
                            f"{model_path}")
    rows, probs = [], []
    for chunk, x in batches(paths, pre["channels"], pre["image_size"]):
        probs.append(engine.view_probabilities(model, x.to(dev), multilabel, tta).cpu().numpy())
        rows += [str(p) for p in chunk]
    p = np.concatenate(probs) if probs else np.zeros((0, len(classes)))
    table = pd.DataFrame({"path": rows})
    for k, name in enumerate(classes):
        table[f"p_{name}"] = p[:, k].round(8)
    if not multilabel:
        table["predicted"] = [classes[k] for k in metrics.decide(p, threshold)]
        return table
    t = np.broadcast_to(np.asarray(0.5 if threshold is None else threshold, dtype=np.float64),
                        (len(classes),))
    called = p >= t[None, :]
    for k, name in enumerate(classes):
        table[f"pred_{name}"] = called[:, k].astype(np.int64)
    table["predicted"] = ["|".join(n for n, c in zip(classes, row, strict=True) if c) or "none"
                          for row in called]
    return table


def main(args: argparse.Namespace) -> None:
    model_path = Path(args.model)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise PipelineError(f"--threshold must be a probability in (0, 1), got {args.threshold}")
    threshold, tta = args.threshold, args.tta or "none"
    if args.metrics:
        metrics = Path(args.metrics)
        if threshold is None and not model_path.exists():
            raise PipelineError(f"{model_path}: model file not found")
        summary = read_metrics(metrics)
        if threshold is None:
            threshold = threshold_from_metrics(metrics, model_path, summary)
        tta = args.tta or tta_from_metrics(metrics, summary)
    paths = find_images(Path(args.images))
    table = predict_files(model_path, paths, threshold, args.device, tta)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    n_classes = sum(c.startswith("p_") for c in table.columns)
    multilabel = any(c.startswith("pred_") for c in table.columns)
    if isinstance(threshold, list):
        rule = f"per-finding thresholds from {args.metrics}"
    elif n_classes > 2 and not multilabel:
        rule = "argmax"
    elif args.threshold is not None:
        rule = f"threshold {threshold:.6g}"
    elif threshold is not None:
        rule = f"threshold {threshold:.6g} from {args.metrics}"
    else:
        rule = "threshold 0.5"
    if tta != "none":
        rule += f", test-time augmentation {tta}"
    log.info("%d images -> %s (%s)", len(table), args.out, rule)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", help="an image file, a folder of images, or a CSV with a "
                                  "'path' column")
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--threshold", type=float, default=None,
                   help="two classes: positive when p >= this; multi-label: each finding "
                        "called when p >= this (default: from --metrics, else 0.5)")
    p.add_argument("--metrics", default=None,
                   help="evaluate stage metrics (metrics/evaluate.json) to take the chosen "
                        "threshold from")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--tta", choices=list(engine.TTA_VIEWS), default=None,
                   help="flipped views to average (default: as --metrics records, else none)")
    return p


if __name__ == "__main__":
    cli.run("predict", main, get_args_parser())
