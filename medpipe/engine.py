"""The training engine: seeding, device choice, batching, the epoch loop, evaluation.

Nothing here imports DVC, so a benchmark or a GPU machine without DVC can drive it::

    from medpipe import engine, models, store
    result = engine.fit(model, train_split, val_split, cfg, device)
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medpipe import PipelineError
from medpipe.cpuconv import MAX_PIXELS, unfold_weight_grad
from medpipe.distributed import DistInfo, all_sum, barrier, gather
from medpipe.fsutil import atomic_path
from medpipe.metrics import mean_label_auc, roc_auc
from medpipe.models import safe_load
from medpipe.store import Split

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed every RNG the pipeline uses (Python, NumPy, torch on CPU and CUDA).

    ``deterministic`` selects deterministic kernels (cuDNN, cuBLAS, scatter ops): the
    same params then give the same model. Off, cuDNN may benchmark and pick faster,
    non-deterministic kernels on a GPU. CPU training here is deterministic either way.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


@dataclass(frozen=True)
class Speed:
    """How the device runs the model: numerics and memory layout, not what it learns."""

    bf16: bool = False  # autocast matmuls and convolutions to bfloat16
    channels_last: bool = False  # NHWC activations (faster convolutions on GPUs and CPUs)
    compile: bool = False  # torch.compile the model
    unfold_grad: bool = False  # CPU: weight gradients of tiny-output convs by im2col (cpuconv)

    @classmethod
    def resolve(cls, cfg, device: torch.device) -> Speed:
        """``auto`` means: bf16 on CUDA where the GPU supports it, fp32 on a CPU;
        channels_last on both (on this project's CPU it was 1.0-1.7x faster for every
        model measured; README, Speed). On a CPU in fp32 without torch.compile, the
        convolutions ``cpuconv`` selects compute their weight gradient by unfolding."""
        cuda = device.type == "cuda"
        bf16 = cfg.precision == "bf16" or (
            cfg.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
        channels_last = cfg.channels_last is True or (
            cfg.channels_last == "auto" and device.type in ("cuda", "cpu"))
        unfold_grad = device.type == "cpu" and not bf16 and not cfg.compile
        return cls(bf16=bf16, channels_last=channels_last, compile=cfg.compile,
                   unfold_grad=unfold_grad)

    def autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.bf16)


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; an unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PipelineError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device '{name}' requested but CUDA is not available here")
    return device


class Batches:
    """Mini-batches straight from the uint8 array store, converted on the device.

    A seeded permutation per epoch replaces a DataLoader: the images are already
    decoded and resized, so the only per-batch work is one gather and one copy. Labels
    are class indices ``(N,)`` (int64), or for a multi-label store the multi-hot
    ``(N, K)`` findings, as float32 targets for the sigmoid loss.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int = 0,
                 balanced: bool = False, rank: int = 0, world: int = 1):
        self.images = torch.from_numpy(np.array(split.images))  # (N, C, S, S) uint8, in RAM
        self.multilabel = np.ndim(split.labels) == 2
        self.labels = torch.from_numpy(np.asarray(
            split.labels, dtype=np.float32 if self.multilabel else np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        # balanced: each epoch draws N images with replacement, every class equally likely.
        self.sample_weights = None
        if balanced:
            if self.multilabel:  # an image has several findings: no class to balance by
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


def check_labels(labels: np.ndarray, task: str, n_classes: int, where: str) -> None:
    """The store's labels must fit its task: int class indices ``(N,)`` below
    ``n_classes``, or for ``multilabel`` a 0/1 matrix ``(N, n_classes)``."""
    labels = np.asarray(labels)
    if task == "multilabel":
        ok = labels.ndim == 2 and labels.shape[1] == n_classes
        if ok and labels.size:
            ok = bool(np.isin(labels, (0, 1)).all())
        if not ok:
            raise PipelineError(f"{where}: a multi-label store needs 0/1 labels of shape "
                                f"(N, {n_classes}), got {labels.dtype} {labels.shape}")
        return
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise PipelineError(f"{where}: expected integer class labels of shape (N,), got "
                            f"{labels.dtype} {labels.shape} (multi-label data needs "
                            "\"task\": \"multilabel\" in stats.json)")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise PipelineError(f"{where}: labels must lie in 0..{n_classes - 1}, found "
                            f"{labels.min()}..{labels.max()}")


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device,
              channels_last: bool = False):
    """uint8 images -> float [0, 1] on ``device``; the division happens there."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Right decisions and decisions made in a batch: the argmax per image, or for
    multi-label targets ``(B, K)`` one per finding (logit >= 0, i.e. p >= 0.5)."""
    if y.ndim == 2:
        return ((logits >= 0) == (y >= 0.5)).sum(), y.numel()
    return (logits.argmax(1) == y).sum(), len(y)


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
    # disable=None: a bar on a terminal, silence in a log file or a test.
    bar = tqdm(batches, desc=desc, leave=False, unit="batch", dynamic_ncols=True,
               mininterval=0.5, disable=None)
    for x, y in bar:
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
        right, made = hits(logits.detach(), y)
        correct += right
        seen += len(y)
        decided += made
    loss_total, correct_total, seen, decided = all_sum(
        [float(loss_sum), float(correct), seen, decided], device)
    loss = loss_total / seen
    if not math.isfinite(loss):
        raise PipelineError(f"training diverged: {desc} loss is {loss}; lower 'train.lr'")
    return {"loss": loss, "accuracy": correct_total / decided}


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


def evaluate(model: nn.Module, batches: Batches, device: torch.device,
             speed: Speed = Speed()) -> dict[str, float]:
    """Loss, accuracy and ROC AUC of ``model`` on ``batches``. Multi-label: binary
    cross-entropy averaged over findings, the share of right decisions at p 0.5, and
    the mean of the per-finding AUCs."""
    probs = predict(model, batches, device, speed)
    labels = batches.labels.numpy()
    if batches.multilabel:
        p = np.clip(probs, 1e-12, 1.0 - 1e-12)
        return {
            "loss": float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()),
            "accuracy": float(((probs >= 0.5) == (labels >= 0.5)).mean()),
            "auc": mean_label_auc(labels, probs),
        }
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "loss": float(-np.log(p_true).mean()),
        "accuracy": float((probs.argmax(1) == labels).mean()),
        "auc": roc_auc(labels, probs),
    }


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


def make_loss(cfg, labels: torch.Tensor, num_classes: int, device: torch.device
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy with label smoothing and, for ``balance: loss``, class weights
    n / (k * n_c): every class contributes as much to the loss as if balanced.

    Multi-label ``labels`` ``(N, K)``: binary cross-entropy on the logits per finding;
    label smoothing pulls the targets towards 1/2 (y (1 - s) + s / 2), and ``balance:
    loss`` weighs each finding's positives by n_neg / n_pos (``pos_weight``)."""
    if labels.ndim == 2:
        return _multilabel_loss(cfg, labels, device)
    weight = None
    if cfg.balance == "loss":
        counts = torch.bincount(labels, minlength=num_classes).double()
        weight = (len(labels) / (num_classes * counts.clamp(min=1))).float().to(device)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)

    return loss


def _multilabel_loss(cfg, labels: torch.Tensor, device: torch.device
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


@dataclass
class FitResult:
    best_epoch: int
    best: dict[str, float]  # val metrics of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0


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


def is_better(monitor: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if monitor == "val_loss" else value > best


def fit(model: nn.Module, train: Split, val: Split, cfg, device: torch.device,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        augment=None, state_path: Path | None = None, fingerprint: str = "",
        dist: DistInfo | None = None) -> FitResult:
    """Train ``model`` for ``cfg.epochs``; leave it holding the weights of the best epoch.

    ``on_epoch(epoch, metrics)`` is called after each epoch with train_* and val_*
    metrics (the stage uses it to log to DVCLive). ``augment`` is an AugmentParams (or
    None) applied to every training batch on the device. With ``cfg.patience`` > 0,
    training stops once the monitored metric has not improved for that many epochs.

    With ``state_path``, the complete training state (weights, optimiser, schedule, every
    RNG, best epoch so far) is saved there after each epoch, and a run that finds a state
    with the same ``fingerprint`` (of params and data) continues from it: it replays the
    finished epochs to ``on_epoch`` and ends with the same model as an uninterrupted run.
    A state with another fingerprint is stale and is discarded.

    Under torchrun (``dist`` active), the model is wrapped in DistributedDataParallel,
    each rank trains on its share of every batch, epoch statistics are summed over
    ranks, and only rank 0 calls ``on_epoch`` and writes the state.

    With ``cfg.ema`` > 0, an exponential moving average of the weights (and batch-norm
    statistics) with that per-step decay (normalised: see ``make_ema``) is what is
    validated, kept and returned.
    """
    from torch.nn.parallel import DistributedDataParallel

    from medpipe.augment import augment_batch, is_identity

    dist = dist or DistInfo()
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
                            balanced=cfg.balance == "sampler", rank=dist.rank, world=dist.world)
    val_batches = Batches(val, max(cfg.batch_size, 256), shuffle=False)
    if len(train_batches) == 0:  # fewer images than processes: not one step to take
        raise PipelineError(f"params.yaml: 'train.batch_size' {cfg.batch_size} over "
                            f"{dist.world} process{'es' if dist.world > 1 else ''} leaves no "
                            f"training step for the {len(train.labels)} training images "
                            "(stage train)")
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(cfg, optimizer, len(train_batches))
    num_classes = (train_batches.labels.shape[1] if train_batches.multilabel
                   else int(max(train_batches.labels.max(), val_batches.labels.max())) + 1)
    loss_fn = make_loss(cfg, train_batches.labels, num_classes, device)
    aug, aug_gen = None, None
    if augment is not None and not is_identity(augment):
        aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 7919 * dist.rank)
        aug = lambda x: augment_batch(x, augment, aug_gen)  # noqa: E731
    ema = make_ema(model, cfg.ema)
    scored = ema.module if ema is not None else model  # what is validated and kept
    result = FitResult(best_epoch=0, best={})
    best_value, best_state = None, None
    first_epoch, stopped = 1, False

    def rng_states() -> dict:
        return {"aug": aug_gen.get_state() if aug_gen is not None else None,
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}

    def snapshot(ranks_rng: list[dict]) -> dict:
        return {
            "fingerprint": fingerprint, "epoch": len(result.history), "stopped": stopped,
            "world": dist.world, "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "batches_rng": train_batches.generator.get_state(), "rng": ranks_rng,
            "best_value": best_value, "best_epoch": result.best_epoch, "best": result.best,
            "best_state": best_state, "history": result.history,
        }

    saved = None
    if state_path is not None:
        saved = load_state(state_path, fingerprint, dist.world, remove_stale=dist.main)
        barrier(dist)
    if saved is not None:
        model.load_state_dict(saved["model"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        train_batches.generator.set_state(saved["batches_rng"])
        mine = saved["rng"][dist.rank]
        if aug_gen is not None:
            aug_gen.set_state(mine["aug"])
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] is not None:
            torch.cuda.set_rng_state(mine["cuda"], device)
        best_value, best_state = saved["best_value"], saved["best_state"]
        result.best_epoch, result.best = saved["best_epoch"], saved["best"]
        result.history = saved["history"]
        first_epoch, stopped = saved["epoch"] + 1, saved["stopped"]
        log.info("resuming after epoch %d from %s", saved["epoch"], state_path)
        if on_epoch is not None and dist.main:
            for epoch, metrics in enumerate(result.history, start=1):
                on_epoch(epoch, metrics)
    start = time.perf_counter()
    with unfold_weight_grad(model, speed.unfold_grad) as switched:
        if switched:
            log.info("%d convolutions unfold their weight gradient whenever their output "
                     "has at most %d pixels", switched, MAX_PIXELS)
        for epoch in range(first_epoch, cfg.epochs + 1):
            if stopped:
                break
            lr = optimizer.param_groups[0]["lr"]
            tr = train_one_epoch(net, train_batches, optimizer, device,
                                 desc=f"epoch {epoch}/{cfg.epochs}", scheduler=scheduler,
                                 loss_fn=loss_fn, augment=aug, speed=speed,
                                 after_step=(lambda: ema.update_parameters(model)) if ema else None)
            va = evaluate(scored if dist.active or ema else net, val_batches, device, speed)
            metrics = {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"], "train_lr": lr,
                       "val_loss": va["loss"], "val_accuracy": va["accuracy"], "val_auc": va["auc"]}
            result.history.append(metrics)
            if dist.main:
                log.info("epoch %d/%d  %s", epoch, cfg.epochs,
                         "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if on_epoch is not None and dist.main:
                on_epoch(epoch, metrics)
            if is_better(cfg.monitor, metrics[cfg.monitor], best_value):
                best_value, result.best_epoch = metrics[cfg.monitor], epoch
                result.best = {k: v for k, v in metrics.items() if k.startswith("val_")}
                best_state = copy.deepcopy(scored.state_dict())
            elif cfg.patience and epoch - result.best_epoch >= cfg.patience:
                log.info("early stop: no %s improvement for %d epochs", cfg.monitor, cfg.patience)
                stopped = True
            if state_path is not None:
                ranks_rng = gather(rng_states(), dist)  # every rank takes part
                if dist.main:
                    with atomic_path(state_path) as tmp:
                        torch.save(snapshot(ranks_rng), tmp)
    result.seconds = time.perf_counter() - start
    result.epochs_run = len(result.history)
    trained = result.epochs_run - first_epoch + 1
    result.images_per_second = trained * len(train.labels) / max(result.seconds, 1e-9)
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
