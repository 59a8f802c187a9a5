"""What the training loop builds once before its first epoch: the network as it runs
(data-parallel, compiled), the batches, optimiser, schedule, loss, augmentation and
weight average."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medpipe import PipelineError
from medpipe.data.loader import Batches
from medpipe.data.store import Split
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.task import Task
from medpipe.training.distributed import DistInfo
from medpipe.training.optim import make_ema, make_loss, make_optimizer, make_scheduler
from medpipe.utils.devices import Speed

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """The pieces of one training run; ``model`` holds the weights that are saved."""

    model: nn.Module
    net: nn.Module  # what the training step calls: ``model``, wrapped by DDP or compile
    scored: nn.Module  # what is validated and kept: ``model``, or its weight average
    speed: Speed
    train_batches: Batches
    val_batches: Batches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    aug_gen: torch.Generator | None
    ema: nn.Module | None


def augmenter(augment: AugmentParams,
              gen: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The augmentation of a training batch."""
    from medpipe.training.augment import augment_batch

    return lambda x: augment_batch(x, augment, gen)


def build(model: nn.Module, train: Split, val: Split, cfg: TrainParams,
          device: torch.device, augment: AugmentParams | None, dist: DistInfo,
          task: Task) -> Setup:
    """Everything the epochs need, built in a fixed order (the RNG draws depend on it)."""
    from torch.nn.parallel import DistributedDataParallel

    from medpipe.training.augment import is_identity

    speed = Speed.resolve(cfg, device)
    model.to(device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    # DDP and the compiled module share their parameters with `model`, whose state is
    # what is saved; validation runs on `model` itself, whole, on every rank.
    net: nn.Module = model
    if dist.active:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                      else None)
        # Each rank its own dropout and augmentation draws (the weights are rank 0's).
        torch.manual_seed(cfg.seed + 7919 * dist.rank)
    if speed.compile:
        net = torch.compile(net)
    log.info("on %s: bf16 %s, channels_last %s, compile %s", device, speed.bf16,
             speed.channels_last, speed.compile)
    train_batches = Batches(train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                            balanced=cfg.balance == "sampler", rank=dist.rank, world=dist.world,
                            task=task)
    val_batches = Batches(val, max(cfg.batch_size, 256), shuffle=False, task=task)
    if len(train_batches) == 0:  # fewer images than processes: not one step to take
        raise PipelineError(f"params.yaml: 'train.batch_size' {cfg.batch_size} over "
                            f"{dist.world} process{'es' if dist.world > 1 else ''} leaves no "
                            f"training step for the {len(train.labels)} training images "
                            "(stage train)")
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(cfg, optimizer, len(train_batches))
    loss_fn = make_loss(cfg, task, train_batches.labels, device)
    aug, aug_gen = None, None
    if augment is not None and not is_identity(augment):
        aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 7919 * dist.rank)
        aug = augmenter(augment, aug_gen)
    ema = make_ema(model, cfg.ema)
    return Setup(model=model, net=net, scored=ema.module if ema is not None else model,
                 speed=speed, train_batches=train_batches, val_batches=val_batches,
                 optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, augment=aug,
                 aug_gen=aug_gen, ema=ema)
