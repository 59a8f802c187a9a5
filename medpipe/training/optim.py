"""Optimisers, learning-rate schedules, losses and the weight average of training."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medpipe import PipelineError
from medpipe.task import Task


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-batch learning-rate schedule: optional linear warm-up from lr/25, then
    constant, step (x0.1 every ``step_epochs``) or cosine decay to zero; or PyTorch's
    one-cycle policy with ``warmup_epochs`` as its rising part."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        # OneCycleLR's rising part ends at step warmup - 1, so one step of it has zero
        # length and torch divides by zero; a warm-up of all steps leaves no decay.
        if not 2 <= warmup < total:
            raise PipelineError(
                f"params.yaml: the onecycle schedule needs 'train.warmup_epochs' (its rising "
                f"part) to span at least 2 of its {total} steps and fewer than all: got "
                f"{cfg.warmup_epochs} epochs x {steps_per_epoch} steps per epoch = {warmup} "
                f"step{'' if warmup == 1 else 's'} (stage train)")
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=warmup / total,
            cycle_momentum=cfg.optimizer == "sgd")

    def factor(step: int) -> float:
        if step < warmup:
            return 1.0 / 25.0 + (1.0 - 1.0 / 25.0) * step / warmup
        if cfg.schedule == "step":
            return 0.1 ** (step // (cfg.step_epochs * steps_per_epoch))
        if cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loss(cfg, task: Task, labels: torch.Tensor, device: torch.device
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of ``task`` (see :data:`LOSSES`) over the training ``labels``."""
    return LOSSES[task.name](cfg, task, labels, device)


def _class_loss(cfg, task: Task, labels: torch.Tensor, device: torch.device
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    weight = None
    if cfg.balance == "loss":
        num_classes = task.n_outputs
        counts = torch.bincount(labels, minlength=num_classes).double()
        weight = (len(labels) / (num_classes * counts.clamp(min=1))).float().to(device)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)

    return loss


def _finding_loss(cfg, task: Task, labels: torch.Tensor, device: torch.device
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    pos_weight = None
    if cfg.balance == "loss":
        positives = labels.double().sum(0)
        # A finding absent from the train split keeps weight 1: nothing to up-weight.
        pos_weight = ((len(labels) - positives) / positives.clamp(min=1))
        pos_weight = torch.where(positives > 0, pos_weight, 1.0).float().to(device)
    s = cfg.label_smoothing

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y * (1.0 - s) + 0.5 * s,
                                                  pos_weight=pos_weight)

    return loss


# Multi-class: cross-entropy with label smoothing and, for ``balance: loss``, class weights
# n / (k * n_c): every class contributes as much to the loss as if balanced.
# Multi-label: binary cross-entropy on the logits per finding; label smoothing pulls the
# targets towards 1/2 (y (1 - s) + s / 2), and ``balance: loss`` weighs each finding's
# positives by n_neg / n_pos (``pos_weight``).
LOSSES = {"multiclass": _class_loss, "multilabel": _finding_loss}


def make_ema(model: nn.Module, decay: float) -> nn.Module | None:
    """A moving average of ``model``'s parameters and buffers (None if ``decay`` is 0).

    After ``n`` steps with weights w_1..w_n it holds the normalised exponential average
    ``sum_i decay**(n-i) w_i / sum_i decay**(n-i)``: each step's share is
    ``(1 - decay) / (1 - decay**n)``, so the decay warms up from 1/2 towards ``decay``
    (the bias correction Adam applies to its moments). The plain recursion that starts
    from a copy of w_1 keeps ``decay**(n-1)`` of it, about 11% after 222 steps at 0.99,
    and that average of barely trained weights failed short runs; in long runs the two
    agree. Integer buffers (batch-norm's batch counts) take the latest value.
    """
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               n_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):
            torch._foreach_copy_(averaged, current)
            return
        n = int(n_averaged) + 1  # the number of steps averaged, this one included
        torch._foreach_lerp_(averaged, current, (1 - decay) / (1 - decay ** n))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
