"""Measured step rates: a few real training steps of a candidate model on the device.

A candidate is timed as the train stage would run its step: the same model builder,
speed settings (bf16 and channels_last as ``auto`` resolves them; on a CPU the unfolded
weight gradients), the augmentation the plan gives it, optimiser, loss and the update of
the weight average, on a batch of the store's own images. Rates are noisy, so the plan
reads them on a ladder of rungs a factor sqrt(2) apart (:func:`rung`): within a rung, a
rerun on the same device kind gives the same plan.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from medpipe.data.loader import to_device
from medpipe.data.store import Split
from medpipe.models.architectures import build_model
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.task import Task
from medpipe.training.augment import is_identity
from medpipe.training.cpuconv import unfold_weight_grad
from medpipe.training.optim import make_ema, make_loss, make_optimizer
from medpipe.training.setup import augmenter
from medpipe.utils.devices import Speed
from medpipe.utils.seeding import seed_everything

RUNGS_PER_DOUBLING = 2  # the ladder: rates 2 ** (k / 2) images/s
WARMUP = 2  # untimed steps first: the CPU's first steps of a new shape are slower


@dataclass(frozen=True)
class Candidate:
    """A model the plan may choose: architecture, the side it sees, and its stem."""

    model: str
    input_size: int
    small_input: bool = False

    @property
    def name(self) -> str:
        return f"{self.model}{' small stem' if self.small_input else ''} at {self.input_size} px"


def rung(rate: float) -> float:
    """``rate`` rounded to the nearest rung (geometrically) of the ladder
    2 ** (k / RUNGS_PER_DOUBLING): within 19% of the rate either way."""
    if rate <= 0:
        return 0.0
    k = round(math.log2(rate) * RUNGS_PER_DOUBLING)
    return 2.0 ** (k / RUNGS_PER_DOUBLING)


def arch_for(candidate: Candidate, stats: dict) -> dict:
    """The architecture dict the train stage would build for ``candidate`` on a store
    with ``stats``; ``input_size`` only where it differs from the store's side."""
    arch = {"name": candidate.model, "in_channels": stats["channels"],
            "num_classes": len(stats["classes"]), "image_size": stats["image_size"],
            "width_mult": 1.0, "small_input": candidate.small_input, "dropout": 0.2,
            "mean": stats["mean"], "std": stats["std"]}
    if candidate.input_size != stats["image_size"]:
        arch["input_size"] = candidate.input_size
    return arch


def measure(candidate: Candidate, stats: dict, train: Split, task: Task,
            device: torch.device, batch: int, steps: int,
            augment: AugmentParams | None = None, average: bool = False) -> float:
    """Images/s of the fastest of ``steps`` training steps of ``candidate`` at ``batch``
    images, after ``WARMUP`` untimed steps (the fastest, as timeit takes the best
    repeat: other work on a shared machine only ever slows a step down). A step is
    what the training loop runs: ``augment`` on the batch (None: none), forward,
    backward, the optimiser, and with ``average`` the weight average's update."""
    seed_everything(0, True)
    cfg = TrainParams(model=candidate.model, small_input=candidate.small_input,
                      optimizer="adamw")
    speed = Speed.resolve(cfg, device)
    model = build_model(arch_for(candidate, stats)).to(device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    index = np.arange(batch) % len(train.labels)  # a small split is repeated to a batch
    x, y = to_device(torch.from_numpy(np.asarray(train.images[index])),
                     torch.from_numpy(np.asarray(train.labels[index],
                                                 dtype=task.target_dtype)),
                     device, speed.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    loss_fn = make_loss(cfg, task, y.cpu(), device)
    # As the training loop augments: resized to a planned side first.
    augmented = (None if augment is None or is_identity(augment) else
                 augmenter(model, augment, torch.Generator(device=device).manual_seed(0)))
    ema = make_ema(model, 0.99) if average else None
    best = math.inf
    with unfold_weight_grad(model, speed.unfold_grad):
        for step in range(WARMUP + steps):
            _sync(device)
            start = time.perf_counter()
            seen = x if augmented is None else augmented(x)
            with speed.autocast(device):
                loss = loss_fn(model(seen).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            _sync(device)
            if step >= WARMUP:
                best = min(best, time.perf_counter() - start)
    return batch / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
