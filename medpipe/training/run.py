"""One model built, trained on a train/val pair of the store and saved: what the train
stage does for the store's own split, the crossval stage for each fold and the plan for
each of its trials, all through :func:`train_model`. Nothing here imports DVC.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medpipe.data import store
from medpipe.models import architectures, checkpoint, imagenet
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.task import Task
from medpipe.training import loop, preflight, state
from medpipe.training.distributed import DistInfo

log = logging.getLogger(__name__)


@dataclass
class Trained:
    model: nn.Module
    arch: dict
    task: Task
    parameters: int
    result: loop.FitResult | None = None  # None until fitted


def build(cfg: TrainParams, stats: dict, train: store.Split, val: store.Split,
          data_dir: Path, device: torch.device, dist: DistInfo, *,
          weights_dir: Path | None = None) -> Trained:
    """Check the split against the params and build the model (ImageNet weights from
    ``weights_dir`` when ``cfg.pretrained``), not yet fitted."""
    task = preflight.check_store(cfg, stats, train, val, data_dir, dist.world)
    arch = architectures.make_arch(cfg, stats)
    model = architectures.build_model(arch, weights=imagenet.for_training(cfg.pretrained,
                                                                          weights_dir),
                                      freeze_backbone=cfg.freeze_backbone)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s (%d parameters) on %s", cfg.model, n_params, device)
    return Trained(model=model, arch=arch, task=task, parameters=n_params)


def train_model(cfg: TrainParams, aug: AugmentParams, stats: dict, train: store.Split,
                val: store.Split, data_dir: Path, device: torch.device,
                dist: DistInfo | None = None, *, weights_dir: Path | None = None,
                on_epoch=None,
                resume: state.Resume | None = None, save_to: Path | None = None,
                record_seconds: bool = False, **info) -> Trained:
    """Build a model (:func:`build`), fit it (:func:`fit`) and, with ``save_to``, save it
    there (rank 0 only; ``info`` adds to the file's record, and ``record_seconds`` the
    training time, which makes the file differ from run to run). The one way a model is
    trained: the train stage, every cross-validation fold and every plan trial."""
    dist = dist or DistInfo()
    built = build(cfg, stats, train, val, data_dir, device, dist, weights_dir=weights_dir)
    fit(built, cfg, aug, train, val, device, dist, on_epoch=on_epoch, resume=resume)
    if save_to is not None and dist.main:
        if record_seconds:
            info["train_seconds"] = round(built.result.seconds, 2)
        save(save_to, built, cfg, aug, stats["classes"], **info)
    return built


def fit(built: Trained, cfg: TrainParams, aug: AugmentParams, train: store.Split,
        val: store.Split, device: torch.device, dist: DistInfo, *, on_epoch=None,
        resume: state.Resume | None = None) -> Trained:
    """Fit the built model (see :func:`loop.fit`); it holds its best epoch afterwards."""
    built.result = loop.fit(built.model, train, val, cfg, device, augment=aug,
                            on_epoch=on_epoch, resume=resume, dist=dist, task=built.task)
    return built


def summary_of(trained: Trained, cfg: TrainParams, device: torch.device, world: int) -> dict:
    """The train metrics: best epoch and its validation figures, time, device."""
    result = trained.result
    return {"best_epoch": result.best_epoch, "epochs": result.epochs_run,
            **{k: round(v, 6) for k, v in result.best.items()}, "model": cfg.model,
            "parameters": trained.parameters, "device": device.type, "processes": world,
            "train_seconds": round(result.seconds, 2),
            "train_images_per_second": round(result.images_per_second, 1)}


def headline_of(summary: dict) -> dict[str, float]:
    """What ``metrics/train.json`` keeps of :func:`summary_of`'s summary (the rest goes to
    its detail file): the best epoch, its validation figures, the epochs run and the
    model's size; never a timing, so two runs of the same model compare equal."""
    return {k: v for k, v in summary.items()
            if k in ("best_epoch", "epochs", "parameters") or k.startswith("val_")}


def save(path: Path, trained: Trained, cfg: TrainParams, aug: AugmentParams,
         classes: list[str], **info) -> None:
    """The model file (see :mod:`medpipe.models.checkpoint`); ``info`` adds to its record."""
    result = trained.result
    checkpoint.save_checkpoint(path, trained.model, arch=trained.arch, classes=classes,
                               params={"train": dataclasses.asdict(cfg),
                                       "augment": dataclasses.asdict(aug)},
                               info={"best_epoch": result.best_epoch, "best": result.best,
                                     **info},
                               task=trained.task.name)
