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
from medpipe.data.loader import Batches, check_labels, to_device
from medpipe.utils.devices import Speed


def probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Softmax over the classes, or a sigmoid per finding for a multi-label model."""
    return torch.sigmoid(logits.float()) if multilabel else torch.softmax(logits.float(), dim=1)


# Test-time augmentation: the views whose probabilities are averaged, as the image
# dimensions flipped (N, C, H, W: 3 is left-right, 2 is up-down).
TTA_VIEWS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (3,)),
    "flips": ((), (3,), (2,), (2, 3)),
}


def view_probabilities(model: nn.Module, x: torch.Tensor, multilabel: bool, tta: str = "none",
                       speed: Speed = Speed()) -> torch.Tensor:
    """Float64 probabilities of the batch ``x`` (already on its device), averaged over
    the flipped views of ``TTA_VIEWS[tta]``."""
    views = TTA_VIEWS[tta]
    total = None
    for dims in views:
        with speed.autocast(x.device):
            logits = model(x.flip(dims) if dims else x)
        p = probabilities(logits, multilabel).double()
        total = p if total is None else total + p
    return total / len(views)


@torch.inference_mode()
def predict(model: nn.Module, batches: Batches, device: torch.device,
            speed: Speed = Speed(), multilabel: bool | None = None,
            tta: str = "none") -> np.ndarray:
    """Probabilities ``(N, classes)`` as float64, in the order of ``batches``: softmax,
    or a sigmoid per finding when ``multilabel`` (default: whether the labels are).
    ``tta`` (a key of ``TTA_VIEWS``) averages the probabilities of flipped views."""
    multilabel = batches.multilabel if multilabel is None else multilabel
    model.eval()
    out = []
    for x, y in batches:
        x = to_device(x, y, device, speed.channels_last)[0]
        out.append(view_probabilities(model, x, multilabel, tta, speed).cpu())
    return torch.cat(out).numpy()


def score_split(model: nn.Module, data_dir: Path, split: str, batch_size: int,
                device: torch.device, task: str, n_classes: int, tta: str = "none"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and the (memory-mapped) images of one split of the store
    (``n_classes`` classes, or findings for a multi-label ``task``)."""
    part = store.load_split(data_dir, split)
    check_labels(part.labels, task, n_classes,
                        str(store.labels_path(data_dir, split)))
    probs = predict(model, Batches(part, batch_size, shuffle=False), device,
                    multilabel=task == "multilabel", tta=tta)
    return np.asarray(part.labels), probs, part.images
