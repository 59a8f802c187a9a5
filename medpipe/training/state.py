"""The training state saved after every epoch, from which a killed run resumes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medpipe import PipelineError
from medpipe.data import store
from medpipe.models.checkpoint import safe_load
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.training.setup import Setup
from medpipe.utils.files import atomic_path, file_digest

log = logging.getLogger(__name__)


def load_state(path: Path, fingerprint: str, world: int = 1, remove_stale: bool = True
               ) -> dict | None:
    """The training state at ``path`` if it belongs to this run (same fingerprint and
    number of processes), else None; ``remove_stale`` deletes one that does not.

    Loaded to the CPU: RNG states must be CPU tensors, and load_state_dict copies the
    weights and optimiser state to the model's device."""
    if not path.exists():
        return None
    try:
        saved = safe_load(path, "cpu", "a training state this pipeline wrote")
    except FileNotFoundError:  # removed since the check above (another rank)
        saved = None
    except PipelineError as e:  # a torn or foreign file: start afresh, as for a stale one
        log.warning("%s; ignored, training starts afresh", e)
        saved = None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint \
            or saved.get("world") != world:
        if saved is not None:
            log.info("discarding training state %s: made with other params, data or "
                     "number of processes", path)
        if remove_stale:
            path.unlink(missing_ok=True)
        return None
    return saved


def fingerprint(cfg: TrainParams, aug: AugmentParams, data_dir: Path) -> str:
    """What a saved training state must match to be resumed: the params and the data."""
    h = hashlib.sha256(json.dumps([dataclasses.asdict(cfg), dataclasses.asdict(aug)],
                                  sort_keys=True).encode())
    paths = [data_dir / store.STATS]
    for split in ("train", "val"):
        paths += [store.images_path(data_dir, split), store.labels_path(data_dir, split)]
    for path in paths:
        h.update(file_digest(path).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Resume:
    """Where the training state is saved after every epoch, and what it must match."""

    path: Path
    fingerprint: str  # of the params and the data (see :func:`fingerprint`)


@dataclass
class Progress:
    """What the epoch loop carries from one epoch to the next; a saved state restores it."""

    history: list[dict[str, float]] = field(default_factory=list)  # metrics per epoch
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)  # val metrics of the best epoch
    best_value: float | None = None  # of the monitored metric
    best_state: dict | None = None  # the weights of the best epoch
    stopped: bool = False  # early stopping has fired


def rng_states(setup: Setup, device: torch.device) -> dict:
    """This process's random generators, as the state file keeps them per rank."""
    return {"aug": setup.aug_gen.get_state() if setup.aug_gen is not None else None,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def save(resume: Resume, setup: Setup, progress: Progress, ranks_rng: list[dict],
         world: int) -> None:
    """Write the complete training state after an epoch (atomically)."""
    snapshot = {
        "fingerprint": resume.fingerprint, "epoch": len(progress.history),
        "stopped": progress.stopped, "world": world, "model": setup.model.state_dict(),
        "ema": setup.ema.state_dict() if setup.ema is not None else None,
        "optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
        "batches_rng": setup.train_batches.generator.get_state(), "rng": ranks_rng,
        "best_value": progress.best_value, "best_epoch": progress.best_epoch,
        "best": progress.best, "best_state": progress.best_state,
        "history": progress.history,
    }
    with atomic_path(resume.path) as tmp:
        torch.save(snapshot, tmp)


def restore(setup: Setup, saved: dict, rank: int, device: torch.device) -> Progress:
    """Put a saved state back into ``setup``; return the loop's progress."""
    setup.model.load_state_dict(saved["model"])
    if setup.ema is not None:
        setup.ema.load_state_dict(saved["ema"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scheduler.load_state_dict(saved["scheduler"])
    setup.train_batches.generator.set_state(saved["batches_rng"])
    mine = saved["rng"][rank]
    if setup.aug_gen is not None:
        setup.aug_gen.set_state(mine["aug"])
    torch.set_rng_state(mine["torch"])
    if mine["cuda"] is not None:
        torch.cuda.set_rng_state(mine["cuda"], device)
    return Progress(history=saved["history"], best_epoch=saved["best_epoch"],
                    best=saved["best"], best_value=saved["best_value"],
                    best_state=saved["best_state"], stopped=saved["stopped"])
