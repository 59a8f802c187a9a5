"""The fold models scored for the evaluate stage: each on its own fold (its out-of-fold
predictions) and on the test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medpipe.data import folds
from medpipe.data.loader import Batches
from medpipe.inference import predictor
from medpipe.inference.ensemble import members
from medpipe.models import checkpoint
from medpipe.task import Task


@dataclass
class FoldScores:
    """One fold model's probabilities: on its own fold (out-of-fold) and on the test split."""

    fold: int
    val_labels: np.ndarray
    val_probs: np.ndarray
    test_probs: np.ndarray


def score_folds(models_dir: Path, data_dir: Path, batch_size: int, device: torch.device,
                task: Task, tta: str = "none") -> tuple[np.ndarray, list[FoldScores]]:
    """The test split's labels, and each fold model's probabilities on its fold and on the
    test split (the one split no fold model has seen)."""
    scores, test_labels = [], None
    for path in members(models_dir):
        model, ckpt = checkpoint.load_checkpoint(path, device)
        k = int(ckpt["info"]["fold"])
        _, val = folds.load_fold(data_dir, k)
        task.check_labels(val.labels, f"{data_dir} fold {k}")
        val_probs = predictor.predict(model, Batches(val, batch_size, shuffle=False, task=task),
                                      device, tta=tta)
        test_labels, test_probs, _ = predictor.score_split(model, data_dir, "test", batch_size,
                                                           device, task, tta)
        scores.append(FoldScores(k, np.asarray(val.labels), val_probs, test_probs))
    return np.asarray(test_labels), scores
