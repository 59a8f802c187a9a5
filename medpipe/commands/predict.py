"""Predict image files with a trained model.

    medpipe predict --model models/model.pt --out predictions.csv IMAGES
    medpipe predict --model models/model.pt --metrics metrics/evaluate_detail.json \
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

``--model`` defaults to the fold ensemble (``models/folds``, with ``prepare.folds``) when
there is one, else ``models/model.pt``; with an ensemble, ``--metrics`` gives the
threshold chosen for the ensemble (``ensemble.threshold`` of the evaluate metrics).

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
from pathlib import Path

from medpipe import PipelineError
from medpipe.commands.output import check_writable
from medpipe.evaluation import multilabel
from medpipe.inference import ensemble, predictor
from medpipe.inference.imagefiles import find_images, predict_files
from medpipe.params.rules import dicom_frame
from medpipe.utils.files import atomic_path, detail_path

log = logging.getLogger(__name__)


def read_metrics(path: Path) -> dict:
    """The evaluate stage's summary (metrics/evaluate_detail.json), or one clear error."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run the evaluate stage first (or "
                            "`dvc pull` its outputs)") from None
    except json.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        raise PipelineError(f"{path}: not an evaluate metrics file")
    if summary and all(isinstance(v, (int, float)) for v in summary.values()):
        raise PipelineError(f"{path}: the headline metrics only; pass its detail file, "
                            f"{detail_path(path)}")
    return summary


# The decision threshold(s) an evaluate summary holds, by task: the positive class's (None
# for argmax), or one per finding in finding order.
THRESHOLDS = {"multiclass": lambda s: s["threshold"]["value"],
              "multilabel": lambda s: [float(t) for t in multilabel.thresholds_of(s)]}


def threshold_from_metrics(path: Path, model_path: Path, summary: dict | None = None
                           ) -> float | list[float] | None:
    """The threshold the evaluate stage chose for this very model (None: argmax), or for
    a multi-label model the list of per-finding thresholds, in finding order.
    ``summary``: ``path`` already read."""
    summary = read_metrics(path) if summary is None else summary
    if Path(model_path).is_dir():  # the fold ensemble: its own threshold and digest
        summary = summary.get("ensemble") or {}
    try:
        digest = summary["model_sha256"]
        value = THRESHOLDS[summary.get("task") or "multiclass"](summary)
    except (KeyError, TypeError):
        raise PipelineError(f"{path}: not an evaluate metrics file (no threshold.value "
                            "or model_sha256)") from None
    if digest != ensemble.digest(model_path):
        raise PipelineError(f"{path}: its threshold was chosen for another model than "
                            f"{model_path}; rerun the evaluate stage or pass --threshold")
    return value


def tta_from_metrics(path: Path, summary: dict) -> str:
    """The test-time augmentation the evaluate stage used (``none`` in files made before
    it had one), so predictions here match the reported figures."""
    tta = summary.get("tta", "none")
    if tta not in predictor.TTA_VIEWS:
        raise PipelineError(f"{path}: unknown tta {tta!r}; expected one of "
                            f"{', '.join(predictor.TTA_VIEWS)}")
    return tta


def frame_choice(text: str) -> str | int:
    """``--dicom-frame``: a word, or a frame number from 1."""
    value: str | int = int(text) if text.isdigit() else text
    if dicom_frame(value) is not None:
        raise PipelineError(f"--dicom-frame {text}: {dicom_frame(value)}")
    return value


def main(args: argparse.Namespace) -> None:
    check_writable(args.out)  # before the images are read and scored
    model_path = Path(args.model) if args.model else ensemble.default_model()
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
    table, task = predict_files(model_path, paths, threshold, args.device, tta,
                                frame_choice(args.dicom_frame))
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    if isinstance(threshold, list):
        rule = f"per-finding thresholds from {args.metrics}"
    elif not task.thresholded:
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
    p = argparse.ArgumentParser(prog="medpipe predict", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("images", help="an image file, a folder of images, or a CSV with a "
                                  "'path' column")
    p.add_argument("--model", default=None,
                   help="model file, or a folder of fold models (default: models/folds if it "
                        "holds fold models, else models/model.pt)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--threshold", type=float, default=None,
                   help="two classes: positive when p >= this; multi-label: each finding "
                        "called when p >= this (default: from --metrics, else 0.5)")
    p.add_argument("--metrics", default=None,
                   help="the evaluate stage's detail file (metrics/evaluate_detail.json) to "
                        "take the chosen threshold and test-time flips from")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--dicom-frame", default="middle",
                   help="multi-frame DICOM: middle | first | a frame number from 1 | refuse "
                        "(as prepare.dicom_frame)")
    p.add_argument("--tta", choices=list(predictor.TTA_VIEWS), default=None,
                   help="flipped views to average (default: as --metrics records, else none)")
    return p
