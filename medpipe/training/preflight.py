"""Checks of the train params against the store, before any training: the task, the batch
size against the training split, the memory the store will take."""

from __future__ import annotations

from pathlib import Path

from medpipe import PipelineError
from medpipe.data import store
from medpipe.models import checkpoint
from medpipe.params.loading import require
from medpipe.params.sections import TrainParams
from medpipe.task import Task


def check_task(cfg: TrainParams, stats: dict, data_dir: Path) -> Task:
    """The store's task, and the params it rules out."""
    task = checkpoint.task_of(stats, str(data_dir / store.STATS))
    require(task.balances_by_class or cfg.balance != "sampler", "train", "balance",
            "is 'sampler', which balances batches by class, but "
            f"{data_dir / store.STATS} is multi-label (an image has several findings); "
            "use 'loss' (a positive weight per finding) or 'none'", "train")
    return task


def check_batch_size(cfg: TrainParams, n_train: int, data_dir: Path) -> None:
    """Refuse a batch larger than the training split.

    ``train.batch_size`` is the batch of one optimiser step (under DDP it is shared out
    among the ``train.nproc`` processes), so it sets the steps per epoch that the
    learning-rate schedule is laid out over. A batch larger than the whole split is
    almost surely a slip, and clamping it would silently change the schedule."""
    if cfg.batch_size <= n_train:
        return
    largest = n_train - n_train % cfg.nproc  # the batch is shared evenly among processes
    if largest == 0:
        advice = f"that is fewer than the {cfg.nproc} processes of 'train.nproc'"
    elif cfg.nproc > 1:
        advice = f"use at most {largest} (a multiple of 'train.nproc' {cfg.nproc})"
    else:
        advice = f"use at most {largest}"
    raise PipelineError(f"params.yaml: 'train.batch_size' {cfg.batch_size} is larger than the "
                        f"{n_train} training images in {data_dir}; {advice} (stage train)")


def check_store(cfg: TrainParams, stats: dict, train: store.Split, val: store.Split,
                data_dir: Path, world: int) -> Task:
    """Every check of the store against ``cfg``; returns the task."""
    task = check_task(cfg, stats, data_dir)
    for name, part in (("train", train), ("val", val)):
        task.check_labels(part.labels, str(store.labels_path(data_dir, name)))
    check_batch_size(cfg, len(train.labels), data_dir)
    # The training loop copies the train and val images into memory, in every process.
    held = (train.images.nbytes + val.images.nbytes) * world
    copies = f", in each of {world} processes" if world > 1 else ""
    store.require_memory(held, data_dir, f"training (its train and val images{copies})",
                         "lower 'prepare.image_size' or free memory (stage train)")
    return task
