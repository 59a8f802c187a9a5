"""Mini-batches straight from the uint8 array store."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from medpipe import PipelineError
from medpipe import task as tasks
from medpipe.data.store import Split


class Batches:
    """Mini-batches straight from the uint8 array store, converted on the device.

    A seeded permutation per epoch replaces a DataLoader: the images are already
    decoded and resized, so the only per-batch work is one gather and one copy. Labels
    are the ``task``'s targets (default: the task labels of this shape pose): class indices
    ``(N,)`` (int64), or for a multi-label store the multi-hot ``(N, K)`` findings, as
    float32 targets for the sigmoid loss.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int = 0,
                 balanced: bool = False, rank: int = 0, world: int = 1,
                 task: tasks.Task | None = None):
        self.images = torch.from_numpy(np.array(split.images))  # (N, C, S, S) uint8, in RAM
        self.task = task or tasks.of_labels(split.labels)
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=self.task.target_dtype))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        # balanced: each epoch draws N images with replacement, every class equally likely.
        self.sample_weights = None
        if balanced:
            if not self.task.balances_by_class:
                raise PipelineError("params.yaml: 'train.balance: sampler' balances batches "
                                    "by class, which a multi-label task does not have; use "
                                    "'loss' (a positive weight per finding) or 'none' "
                                    "(stage train)")
            counts = torch.bincount(self.labels).double()
            self.sample_weights = (1.0 / counts)[self.labels]
        # Data parallel: every rank draws the same global order and takes every world-th
        # image of each batch, so the ranks together see exactly one process's batches.
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        n = len(self.labels)
        full, rest = divmod(n, self.batch_size)
        # A last batch too small to give every rank an image is dropped (world > 1 only).
        return full + (1 if rest >= self.world else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, n, replacement=True,
                                      generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        for step in range(len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            if self.world > 1:
                idx = idx[self.rank :: self.world]
            yield self.images[idx], self.labels[idx]


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device,
              channels_last: bool = False):
    """uint8 images -> float [0, 1] on ``device``; the division happens there."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)
