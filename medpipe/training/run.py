"""One model trained on a train/val pair of the store and saved: what the train stage does
for the store's own split and the crossval stage for each fold. Nothing here imports DVC.
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
          weights_dir: Path | None = None, input_size: int | None = None) -> Trained:
    """Check the split against the params and build the model (ImageNet weights from
    ``weights_dir`` when ``cfg.pretrained``; ``input_size``: the side a plan has the
    model resize the store's images to), not yet fitted."""
    task = preflight.check_store(cfg, stats, train, val, data_dir, dist.world)
    arch = architectures.make_arch(cfg, stats)
    if input_size not in (None, stats["image_size"]):
        arch["input_size"] = input_size
    model = architectures.build_model(arch, weights=imagenet.for_training(cfg.pretrained,
                                                                          weights_dir),
                                      freeze_backbone=cfg.freeze_backbone)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s (%d parameters) on %s", cfg.model, n_params, device)
    return Trained(model=model, arch=arch, task=task, parameters=n_params)


def fit(built: Trained, cfg: TrainParams, aug: AugmentParams, train: store.Split,
        val: store.Split, device: torch.device, dist: DistInfo, *, on_epoch=None,
        resume: state.Resume | None = None) -> Trained:
    """Fit the built model (see :func:`loop.fit`); it holds its best epoch afterwards."""
    built.result = loop.fit(built.model, train, val, cfg, device, augment=aug,
                            on_epoch=on_epoch, resume=resume, dist=dist, task=built.task)
    return built


def resume_key(cfg: TrainParams, aug: AugmentParams, data_dir: Path, arch: dict) -> str:
    """What a saved training state must match: params, data and a planned input size."""
    return state.fingerprint(cfg, aug, data_dir) + (f"@{arch['input_size']}px"
                                                    if "input_size" in arch else "")


def summary_of(trained: Trained, cfg: TrainParams, device: torch.device, world: int) -> dict:
    """The train metrics: best epoch and its validation figures, time, device."""
    result = trained.result
    return {"best_epoch": result.best_epoch, "epochs": result.epochs_run,
            **{k: round(v, 6) for k, v in result.best.items()}, "model": cfg.model,
            "parameters": trained.parameters, "device": device.type, "processes": world,
            "train_seconds": round(result.seconds, 2),
            "train_images_per_second": round(result.images_per_second, 1)}


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
