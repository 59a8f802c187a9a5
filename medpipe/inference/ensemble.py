"""The fold ensemble: the models of cross-validation (``models/folds/fold_<k>.pt``) as one
model whose probabilities are the mean of theirs.

:class:`Ensemble` is a module like any model: its output are logits whose softmax (or
sigmoid per finding) is the members' mean probability, so evaluate, ``medpipe predict``
and ``medpipe export`` use it unchanged. :func:`load_model` takes a model file or a
folder of fold models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from medpipe import PipelineError
from medpipe.models import checkpoint
from medpipe.task import Task
from medpipe.utils.files import file_digest

MODELS = Path("models")


def members(models_dir: Path | str) -> list[Path]:
    """The fold models in ``models_dir``, in fold order (none when it is absent)."""
    found = []
    for path in Path(models_dir).glob("fold_*.pt"):
        number = path.name.removeprefix("fold_").removesuffix(".pt")
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


class Ensemble(nn.Module):
    """The members' probabilities averaged, returned as logits of ``task``."""

    def __init__(self, models: list[nn.Module], task: Task):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([self.task.probabilities(m(x)) for m in self.members]).mean(0)
        return self.task.to_logits(probs)


def load_model(path: Path | str, device: torch.device | str) -> tuple[nn.Module, dict]:
    """A model file, or a folder of fold models as their :class:`Ensemble`, with the model
    file's record (for an ensemble the first member's, with ``members`` added)."""
    path = Path(path)
    if not path.is_dir():
        return checkpoint.load_checkpoint(path, device)
    paths = members(path)
    if not paths:
        raise PipelineError(f"{path}: no fold models (fold_<k>.pt); set 'prepare.folds' and "
                            "run the crossval stage, or give a model file")
    loaded = [checkpoint.load_checkpoint(p, device) for p in paths]
    first = loaded[0][1]
    for p, (_, ckpt) in zip(paths, loaded, strict=True):
        for key in ("task", "classes", "preprocess"):
            if ckpt.get(key) != first.get(key):
                raise PipelineError(f"{p}: its {key} differs from {paths[0]}'s; the fold "
                                    "models must come from one crossval run")
    task = checkpoint.task_of(first)
    model = Ensemble([m for m, _ in loaded], task).to(device).eval()
    return model, {**first, "members": [p.name for p in paths]}


def digest(path: Path | str) -> str:
    """SHA-256 of a model file; of a fold folder, of its members' digests in fold order."""
    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    h = hashlib.sha256()
    for member in members(path):
        h.update(f"{member.name} {file_digest(member)}\n".encode())
    return h.hexdigest()


def default_model(models_root: Path = MODELS) -> Path:
    """What prediction and export use by default: the fold ensemble when there is one,
    else the train stage's model."""
    folds = models_root / "folds"
    return folds if members(folds) else models_root / "model.pt"
