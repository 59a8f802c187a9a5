"""Apply a trained model to batches: probabilities (softmax, or a sigmoid per finding), with
optional test-time flips. The evaluate stage, ``medpipe predict`` and the training loop's
validation all score through here, so they cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medpipe.data import store
from medpipe.data.loader import Batches, to_device
from medpipe.task import Task
from medpipe.utils.devices import Speed

# Test-time augmentation: the views whose probabilities are averaged, as the image
# dimensions flipped (N, C, H, W: 3 is left-right, 2 is up-down).
TTA_VIEWS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (3,)),
    "flips": ((), (3,), (2,), (2, 3)),
}


def view_probabilities(model: nn.Module, x: torch.Tensor, task: Task, tta: str = "none",
                       speed: Speed = Speed()) -> torch.Tensor:
    """Float64 probabilities of the batch ``x`` (already on its device), the ``task``'s
    (softmax, or a sigmoid per finding), averaged over the flipped views of
    ``TTA_VIEWS[tta]``."""
    views = TTA_VIEWS[tta]
    total = None
    for dims in views:
        with speed.autocast(x.device):
            logits = model(x.flip(dims) if dims else x)
        p = task.probabilities(logits).double()
        total = p if total is None else total + p
    return total / len(views)


@torch.inference_mode()
def predict(model: nn.Module, batches: Batches, device: torch.device,
            speed: Speed = Speed(), tta: str = "none") -> np.ndarray:
    """Probabilities ``(N, classes)`` as float64, in the order of ``batches``, as their
    task gives them (softmax, or a sigmoid per finding). ``tta`` (a key of
    ``TTA_VIEWS``) averages the probabilities of flipped views."""
    model.eval()
    out = []
    for x, y in batches:
        x = to_device(x, y, device, speed.channels_last)[0]
        out.append(view_probabilities(model, x, batches.task, tta, speed).cpu())
    return torch.cat(out).numpy()


def score_split(model: nn.Module, data_dir: Path, split: str, batch_size: int,
                device: torch.device, task: Task, tta: str = "none"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and the (memory-mapped) images of one split of the store."""
    part = store.load_split(data_dir, split)
    task.check_labels(part.labels, str(store.labels_path(data_dir, split)))
    probs = predict(model, Batches(part, batch_size, shuffle=False, task=task), device,
                    tta=tta)
    return np.asarray(part.labels), probs, part.images
