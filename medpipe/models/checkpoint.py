"""The self-describing model file and the safe loader of every PyTorch file the pipeline
reads: weights, task, classes, preprocessing and params in plain data, loadable with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from medpipe import PipelineError
from medpipe import task as tasks
from medpipe.models.architectures import Classifier, build_model
from medpipe.utils.files import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def task_of(meta: dict, where: str = "task") -> tasks.Task:
    """The task a store's ``stats.json`` or a model file declares (see
    :func:`medpipe.task.from_meta`)."""
    return tasks.from_meta(meta, where)


def save_checkpoint(path: Path | str, model: Classifier, *, arch: dict, classes: list[str],
                    params: dict, info: dict, task: str = "multiclass") -> None:
    """Write the model atomically as plain data loadable with ``weights_only=True``.
    ``task``: ``multiclass`` (softmax over ``classes``) or ``multilabel`` (a sigmoid per
    finding in ``classes``)."""
    if task not in tasks.TASKS:
        raise ValueError(f"unknown task {task!r}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "task": task,
        "classes": list(classes),
        "preprocess": {
            "image_size": arch["image_size"],
            "channels": arch["in_channels"],
            "intensity_range": [0, 255],
            "mean": arch["mean"],
            "std": arch["std"],
        },
        "params": params,
        "info": info,
        "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


# The weights-only unpickler names a refused class or function as "GLOBAL module.name"
# (e.g. "GLOBAL posix.system"); any other unpickling error means bytes that are no pickle.
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]{0,100})")


def safe_load(path: Path | str, map_location: Any = "cpu", what: str = "a PyTorch file"
              ) -> Any:
    """``torch.load(path, map_location, weights_only=True)``, the loader of every PyTorch
    file the pipeline reads (model files, ImageNet weights, training states): it refuses
    pickled objects other than tensors and plain data, so a file from elsewhere cannot
    run code. Torch's own error for such a file advises retrying with the unsafe loader,
    wrong for a file of unknown origin; so every failure here is one line naming the
    file: ``<path>: refused: not <what> (...)`` for a file carrying pickled code,
    ``<path>: refused: not a PyTorch file ...`` for one that is corrupt, truncated or of
    another kind. ``what`` names the file expected, e.g. "a model file this pipeline
    wrote".

    FileNotFoundError passes through, for the caller to say which stage makes the file;
    so do out-of-memory errors, which say nothing about the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except IsADirectoryError:
        raise PipelineError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except pickle.UnpicklingError as e:
        log.debug("torch.load(%s): %s", path, e)
        found = _GLOBAL.search(str(e))
        if found is None:  # an opcode or string no pickle holds: random or damaged bytes
            raise PipelineError(_corrupt(path)) from None
        raise PipelineError(
            f"{path}: refused: not {what} (it holds pickled objects other than tensors and "
            f"plain data, here {found.group(1)}, which could run code)") from None
    except Exception as e:  # noqa: BLE001 - the zip reader and unpickler raise many types
        # RuntimeError from the zip reader, EOFError, KeyError, UnicodeDecodeError, ...
        log.debug("torch.load(%s): %s: %s", path, type(e).__name__, e)
        raise PipelineError(_corrupt(path)) from None


def _corrupt(path: Path) -> str:
    return f"{path}: refused: not a PyTorch file, or a corrupt or truncated one"


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu"
                    ) -> tuple[Classifier, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code."""
    path = Path(path)
    try:
        ckpt = safe_load(path, device, "a model file this pipeline wrote")
    except FileNotFoundError:
        raise PipelineError(f"{path}: model file not found; run the train stage first") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise PipelineError(f"{path}: not a medpipe model file (format {CHECKPOINT_FORMAT})")
    model = build_model(ckpt["arch"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def check_matches_store(model_path: Path, ckpt: dict, data_dir: Path, stats: dict) -> None:
    """The model must have been trained for this store: task, classes, size, channels."""
    if task_of(ckpt).name != task_of(stats).name:
        raise PipelineError(f"{model_path}: a {task_of(ckpt).name} model, but {data_dir} "
                            f"holds a {task_of(stats).name} task; retrain the model")
    if ckpt["classes"] != stats["classes"]:
        raise PipelineError(f"{model_path}: trained on classes {ckpt['classes']}, but "
                            f"{data_dir} has {stats['classes']}; retrain the model")
    pre = ckpt["preprocess"]
    if (pre["image_size"], pre["channels"]) != (stats["image_size"], stats["channels"]):
        raise PipelineError(f"{model_path}: expects {pre['channels']}x{pre['image_size']}px "
                            f"images, {data_dir} holds {stats['channels']}x"
                            f"{stats['image_size']}px; retrain the model")
