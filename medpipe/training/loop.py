"""The training loop: epochs over the array store, validation, best-epoch keeping, resume.

Nothing here imports DVC, so a benchmark or a GPU machine without DVC can drive it::

    from medpipe.training.loop import fit
    result = fit(model, train_split, val_split, cfg, device)  # cfg: a TrainParams
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medpipe import PipelineError
from medpipe.data.loader import Batches, to_device
from medpipe.data.store import Split
from medpipe.evaluation.findings import mean_label_auc
from medpipe.evaluation.metrics import roc_auc
from medpipe.inference.predictor import predict
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.task import Task, of_labels
from medpipe.training import state
from medpipe.training.cpuconv import MAX_PIXELS, unfold_weight_grad
from medpipe.training.distributed import DistInfo, all_sum, barrier, gather
from medpipe.training.setup import Setup, build
from medpipe.training.state import Progress, Resume
from medpipe.utils.devices import Speed
from medpipe.utils.progress import Tracker, track

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, dict[str, float]], None]


def train_one_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, desc: str = "train",
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    speed: Speed = Speed(),
                    after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One pass over ``batches``; returns the mean loss and accuracy over the epoch
    (multi-label: the share of right decisions over all images and findings).

    ``scheduler`` steps after every batch; ``augment`` maps a float batch in [0, 1] to an
    augmented one on the device; ``after_step`` runs after every optimiser step (the
    weight average uses it)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = decided = 0
    # A bar on a terminal; in a log, the run's progress (fit) reports instead.
    for x, y in track(batches, desc, unit="batch", leave=False, log_lines=False):
        x, y = to_device(x, y, device, speed.channels_last)
        if augment is not None:
            x = augment(x)
        with speed.autocast(device):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        loss_sum += loss.detach() * len(y)
        right, made = batches.task.hits(logits.detach(), y)
        correct += right
        seen += len(y)
        decided += made
    loss_total, correct_total, seen, decided = all_sum(
        [float(loss_sum), float(correct), seen, decided], device)
    loss = loss_total / seen
    if not math.isfinite(loss):
        raise PipelineError(f"training diverged: {desc} loss is {loss}; lower 'train.lr'")
    return {"loss": loss, "accuracy": correct_total / decided}


def evaluate(model: nn.Module, batches: Batches, device: torch.device,
             speed: Speed = Speed()) -> dict[str, float]:
    """Loss, accuracy, balanced accuracy and ROC AUC of ``model`` on ``batches``.
    Multi-label: binary cross-entropy averaged over findings, the share of right
    decisions at p 0.5, the mean recall of each finding's present and absent images, and
    the mean of the per-finding AUCs."""
    probs = predict(model, batches, device, speed)
    labels, task = batches.labels.numpy(), batches.task
    return {"loss": task.nll(probs, labels), "accuracy": task.accuracy(probs, labels),
            "balanced_accuracy": task.balanced_accuracy(probs, labels),
            "auc": VAL_AUC[task.name](labels, probs, task)}


# The validation AUC: the positive class's, or one-vs-rest for classes; the mean of the
# per-finding AUCs.
VAL_AUC: dict[str, Callable[[np.ndarray, np.ndarray, Task], float]] = {
    "multiclass": lambda labels, probs, task: roc_auc(labels, probs,
                                                      positive=task.positive_index),
    "multilabel": lambda labels, probs, task: mean_label_auc(labels, probs),
}


@dataclass
class FitResult:
    best_epoch: int
    best: dict[str, float]  # val metrics of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0


def is_better(monitor: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if monitor == "val_loss" else value > best


def fit(model: nn.Module, train: Split, val: Split, cfg: TrainParams, device: torch.device,
        *, augment: AugmentParams | None = None, on_epoch: OnEpoch | None = None,
        resume: Resume | None = None, dist: DistInfo | None = None,
        task: Task | None = None) -> FitResult:
    """Train ``model`` for ``cfg.epochs``; leave it holding the weights of the best epoch.

    ``on_epoch(epoch, metrics)`` is called after each epoch with train_* and val_*
    metrics (the stage uses it to log to DVCLive). ``augment`` is applied to every
    training batch on the device. With ``cfg.patience`` > 0, training stops once the
    monitored metric has not improved for that many epochs.

    With ``resume``, the complete training state (weights, optimiser, schedule, every
    RNG, best epoch so far) is saved to ``resume.path`` after each epoch, and a run that
    finds a state with the same fingerprint (of params and data) continues from it: it
    replays the finished epochs to ``on_epoch`` and ends with the same model as an
    uninterrupted run. A state with another fingerprint is stale and is discarded.

    Under torchrun (``dist`` active), the model is wrapped in DistributedDataParallel,
    each rank trains on its share of every batch, epoch statistics are summed over
    ranks, and only rank 0 calls ``on_epoch`` and writes the state.

    With ``cfg.ema`` > 0, an exponential moving average of the weights (and batch-norm
    statistics; see ``optim.make_ema``) is what is validated, kept and returned.
    ``task``: what the labels mean (default: see :func:`medpipe.task.of_labels`).
    """
    dist = dist or DistInfo()
    task = task or of_labels(train.labels)
    run = build(model, train, val, cfg, device, augment, dist, task)
    progress = _resume(run, resume, dist, device, on_epoch)
    first_epoch = len(progress.history) + 1
    start = time.perf_counter()
    with _run_tracker(run, cfg, first_epoch, dist) as whole, \
            unfold_weight_grad(model, run.speed.unfold_grad) as switched:
        if switched:
            log.info("%d convolutions unfold their weight gradient whenever their output "
                     "has at most %d pixels", switched, MAX_PIXELS)
        for epoch in range(first_epoch, cfg.epochs + 1):
            if progress.stopped:
                break
            whole.set_detail(f"epoch {epoch}/{cfg.epochs}")
            began = time.perf_counter()
            metrics = _one_epoch(run, cfg, device, epoch, dist, whole.update)
            progress.history.append(metrics)
            if dist.main:
                _log_epoch(epoch, cfg.epochs, metrics, time.perf_counter() - began, whole)
                if on_epoch is not None:
                    on_epoch(epoch, metrics)
            _keep_best(progress, run, cfg, epoch, metrics)
            if resume is not None:
                ranks_rng = gather(state.rng_states(run, device), dist)  # every rank takes part
                if dist.main:
                    state.save(resume, run, progress, ranks_rng, dist.world)
    seconds = time.perf_counter() - start
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    trained = len(progress.history) - first_epoch + 1
    return FitResult(best_epoch=progress.best_epoch, best=progress.best,
                     history=progress.history, epochs_run=len(progress.history),
                     seconds=seconds,
                     images_per_second=trained * len(train.labels) / max(seconds, 1e-9))


def fastest_step(model: nn.Module, train: Split, cfg: TrainParams, device: torch.device,
                 *, augment: AugmentParams | None, task: Task, steps: int,
                 warmup: int = 2) -> float:
    """Seconds of the fastest of ``steps`` training steps of ``model`` after ``warmup``
    untimed ones (a new shape's first steps are slower), each step exactly as
    :func:`fit` takes it (its batch drawn from ``train``, augmentation, forward, loss,
    backward, optimiser, schedule and weight average), built by the same
    :func:`~medpipe.training.setup.build`. The fastest, as timeit takes the best repeat:
    other work on a shared machine only ever slows a step down."""
    index = np.arange((warmup + steps) * cfg.batch_size) % len(train.labels)
    sample = Split(np.asarray(train.images[index]), np.asarray(train.labels[index]))
    timing = dataclasses.replace(cfg, epochs=1, schedule="constant", warmup_epochs=0)
    run = build(model, sample, sample, timing, device, augment, DistInfo(), task)
    ticks: list[float] = []

    def tick() -> None:
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ticks.append(time.perf_counter())

    with unfold_weight_grad(model, run.speed.unfold_grad):
        ticks.append(time.perf_counter())
        train_one_epoch(run.net, run.train_batches, run.optimizer, device, desc="timing",
                        scheduler=run.scheduler, loss_fn=run.loss_fn, augment=run.augment,
                        speed=run.speed, after_step=tick)
    return float(np.diff(ticks)[warmup:].min())


def _run_tracker(run: Setup, cfg: TrainParams, first_epoch: int, dist: DistInfo) -> Tracker:
    """The whole run's progress, in batches over every epoch (rank 0 only)."""
    steps = len(run.train_batches)
    return Tracker(cfg.epochs * steps, "train", unit="batch", initial=(first_epoch - 1) * steps,
                   bar=None if dist.main else False, log_lines=dist.main)


def _log_epoch(epoch: int, epochs: int, metrics: dict[str, float], seconds: float,
               whole: Tracker) -> None:
    log.info("epoch %d/%d  %s  (%.1f s; %s)", epoch, epochs,
             "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), seconds, whole.times())


def _resume(run: Setup, resume: Resume | None, dist: DistInfo, device: torch.device,
            on_epoch: OnEpoch | None) -> Progress:
    """The progress of a matching saved state (restored into ``run``), else a fresh one."""
    saved = None
    if resume is not None:
        saved = state.load_state(resume.path, resume.fingerprint, dist.world,
                                 remove_stale=dist.main)
        barrier(dist)
    if saved is None:
        return Progress()
    progress = state.restore(run, saved, dist.rank, device)
    log.info("resuming after epoch %d from %s", saved["epoch"], resume.path)
    if on_epoch is not None and dist.main:
        for epoch, metrics in enumerate(progress.history, start=1):
            on_epoch(epoch, metrics)
    return progress


def _one_epoch(run: Setup, cfg: TrainParams, device: torch.device, epoch: int,
               dist: DistInfo, on_step: Callable[[], None]) -> dict[str, float]:
    """Train one epoch (``on_step`` after every step), then validate; the epoch's metrics."""
    lr = run.optimizer.param_groups[0]["lr"]

    def after_step() -> None:
        if run.ema:
            run.ema.update_parameters(run.model)
        on_step()

    tr = train_one_epoch(run.net, run.train_batches, run.optimizer, device,
                         desc=f"epoch {epoch}/{cfg.epochs}", scheduler=run.scheduler,
                         loss_fn=run.loss_fn, augment=run.augment, speed=run.speed,
                         after_step=after_step)
    # Scored in fp32, as the evaluate stage scores the kept weights: a model trained with
    # bf16 autocast keeps fp32 weights, and its best epoch is the one the test scores.
    va = evaluate(run.scored if dist.active or run.ema else run.net, run.val_batches, device,
                  dataclasses.replace(run.speed, bf16=False))
    return {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"], "train_lr": lr,
            "val_loss": va["loss"], "val_accuracy": va["accuracy"],
            "val_balanced_accuracy": va["balanced_accuracy"], "val_auc": va["auc"]}


def _keep_best(progress: Progress, run: Setup, cfg: TrainParams, epoch: int,
               metrics: dict[str, float]) -> None:
    """Keep the weights of a better epoch; or stop early after ``cfg.patience`` worse."""
    if is_better(cfg.monitor, metrics[cfg.monitor], progress.best_value):
        progress.best_value, progress.best_epoch = metrics[cfg.monitor], epoch
        progress.best = {k: v for k, v in metrics.items() if k.startswith("val_")}
        progress.best_state = copy.deepcopy(run.scored.state_dict())
    elif cfg.patience and epoch - progress.best_epoch >= cfg.patience:
        log.info("early stop: no %s improvement for %d epochs", cfg.monitor, cfg.patience)
        progress.stopped = True
