"""Stage 3, train: fit a model on the array store; keep the best epoch.

Reads ``data/prepared``, ``models/pretrained`` (ImageNet weights, when
``train.pretrained``) and ``params.yaml`` sections ``train`` and ``augment``; writes
the model (``models/model.pt``: weights, task, classes, preprocessing and params, loadable
with ``torch.load(weights_only=True)``), ``metrics/train.json`` (best epoch and its
validation metrics, time, device), per-epoch curves through DVCLive under
``metrics/train`` and a
preview of augmented training images (``metrics/augment_preview.png``). While it runs,
``models/train_state.pt`` holds the state of the last finished epoch: a killed run
resumes from it on the next ``dvc repro`` (it is not a DVC output, since DVC deletes
outputs before rerunning a stage, and it is removed when training completes).

A multi-label store (``"task": "multilabel"`` in ``stats.json``, multi-hot labels) is
trained with a sigmoid per finding and binary cross-entropy; its validation AUC is the
mean of the per-finding AUCs.

    python -m stages.train --data data/prepared --model models/model.pt \
        --metrics metrics/train.json --live metrics/train \
        --preview metrics/augment_preview.png --state models/train_state.pt \
        --weights models/pretrained
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from medpipe import PipelineError, cli, distributed, engine, gpus, models, store, weights
from medpipe.augment import preview
from medpipe.fsutil import atomic_path, clean_stale, file_digest, write_json
from medpipe.params import AugmentParams, TrainParams, load_section, require

log = logging.getLogger(__name__)


def check(cfg: TrainParams) -> None:
    """Value checks the types alone cannot express, before any work is done."""
    models.check_model_name(cfg.model)
    require(cfg.lr > 0, "train", "lr", f"must be positive, got {cfg.lr}", "train")
    require(cfg.epochs >= 1, "train", "epochs", f"must be at least 1, got {cfg.epochs}", "train")
    require(cfg.batch_size >= 1, "train", "batch_size",
            f"must be at least 1, got {cfg.batch_size}", "train")
    require(0.0 <= cfg.dropout < 1.0, "train", "dropout",
            f"must be in [0, 1), got {cfg.dropout}", "train")
    require(cfg.width_mult > 0, "train", "width_mult",
            f"must be positive, got {cfg.width_mult}", "train")
    require(0.0 <= cfg.momentum < 1.0, "train", "momentum",
            f"must be in [0, 1), got {cfg.momentum}", "train")
    require(cfg.weight_decay >= 0, "train", "weight_decay",
            f"must be non-negative, got {cfg.weight_decay}", "train")
    require(0.0 <= cfg.label_smoothing < 1.0, "train", "label_smoothing",
            f"must be in [0, 1), got {cfg.label_smoothing}", "train")
    require(0.0 <= cfg.ema < 1.0, "train", "ema", f"must be in [0, 1), got {cfg.ema}", "train")
    require(cfg.warmup_epochs >= 0, "train", "warmup_epochs",
            f"must be non-negative, got {cfg.warmup_epochs}", "train")
    require(cfg.step_epochs >= 1, "train", "step_epochs",
            f"must be at least 1, got {cfg.step_epochs}", "train")
    require(cfg.patience >= 0, "train", "patience",
            f"must be non-negative, got {cfg.patience}", "train")
    require(cfg.nproc >= 1, "train", "nproc", f"must be at least 1, got {cfg.nproc}", "train")
    require(cfg.batch_size % cfg.nproc == 0, "train", "batch_size",
            f"must be divisible by train.nproc ({cfg.nproc}), got {cfg.batch_size}", "train")


def check_augment(cfg: AugmentParams) -> None:
    for key in ("affine_p", "hflip_p", "vflip_p", "intensity_p", "noise_p"):
        value = getattr(cfg, key)
        require(0.0 <= value <= 1.0, "augment", key, f"is a probability, got {value}", "train")
    for key in ("rotation", "translate", "brightness", "gamma", "noise_std"):
        value = getattr(cfg, key)
        require(value >= 0, "augment", key, f"must be non-negative, got {value}", "train")
    require(0.0 <= cfg.contrast < 1.0, "augment", "contrast",
            f"must be in [0, 1), got {cfg.contrast}", "train")
    require(len(cfg.scale) == 2 and 0 < cfg.scale[0] <= cfg.scale[1], "augment", "scale",
            f"must be [min, max] with 0 < min <= max, got {cfg.scale}", "train")


def check_task(cfg: TrainParams, stats: dict, data_dir: Path) -> str:
    """The store's task (``multiclass`` or ``multilabel``), and the params it rules out."""
    task = models.task_of(stats)
    if task not in models.TASKS:
        raise PipelineError(f"{data_dir / store.STATS}: unknown task '{task}'; expected "
                            f"{' or '.join(models.TASKS)}")
    if task == "multilabel":
        require(cfg.balance != "sampler", "train", "balance",
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
    require(False, "train", "batch_size",
            f"{cfg.batch_size} is larger than the {n_train} training images in {data_dir}; "
            f"{advice}", "train")


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


def train(cfg: TrainParams, aug: AugmentParams, data_dir: Path, model_path: Path,
          metrics_path: Path, preview_path: Path | None = None, on_epoch=None,
          state_path: Path | None = None, weights_dir: Path | None = None) -> dict:
    """Train on the store at ``data_dir``; write the model and the train metrics.

    ``weights_dir``: the ``pretrained`` stage's output, read when ``cfg.pretrained``.

    With ``state_path``, training state is saved there after every epoch and a killed
    run resumes from it (see ``engine.fit``); it is removed once the model is written."""
    check(cfg)
    check_augment(aug)
    engine.seed_everything(cfg.seed, cfg.deterministic)
    device = engine.resolve_device(cfg.device)
    dist = distributed.DistInfo()
    if distributed.under_torchrun():
        dist, device = distributed.init(device)
    try:
        return _train(cfg, aug, data_dir, model_path, metrics_path, preview_path, on_epoch,
                      state_path, weights_dir, device, dist)
    finally:
        distributed.shutdown()


def _train(cfg: TrainParams, aug: AugmentParams, data_dir: Path, model_path: Path,
           metrics_path: Path, preview_path: Path | None, on_epoch, state_path: Path | None,
           weights_dir: Path | None, device, dist: distributed.DistInfo) -> dict:
    stats = store.read_stats(data_dir)
    task = check_task(cfg, stats, data_dir)
    arch = models.make_arch(cfg, stats)
    model = models.build_model(arch, weights=_imagenet(cfg, weights_dir),
                               freeze_backbone=cfg.freeze_backbone)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s (%d parameters) on %s", cfg.model, n_params, device)
    train_split = store.load_split(data_dir, "train")
    val_split = store.load_split(data_dir, "val")
    for name, part in (("train", train_split), ("val", val_split)):
        engine.check_labels(part.labels, task, len(stats["classes"]),
                            str(store.labels_path(data_dir, name)))
    check_batch_size(cfg, len(train_split.labels), data_dir)
    # The engine copies the train and val images into memory, in every process.
    held = (train_split.images.nbytes + val_split.images.nbytes) * dist.world
    copies = f", in each of {dist.world} processes" if dist.world > 1 else ""
    store.require_memory(held, data_dir, f"training (its train and val images{copies})",
                         "lower 'prepare.image_size' or free memory (stage train)")
    if preview_path is not None and dist.main:
        with atomic_path(preview_path) as tmp:
            preview(train_split.images[:8], aug, seed=cfg.seed).save(tmp, format="PNG")
    result = engine.fit(model, train_split, val_split, cfg, device,
                        on_epoch=on_epoch, augment=aug, state_path=state_path,
                        fingerprint=fingerprint(cfg, aug, data_dir) if state_path else "",
                        dist=dist)
    summary = {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        **{k: round(v, 6) for k, v in result.best.items()},
        "model": cfg.model,
        "parameters": n_params,
        "device": device.type,
        "processes": dist.world,
        "train_seconds": round(result.seconds, 2),
        "train_images_per_second": round(result.images_per_second, 1),
    }
    if not dist.main:
        return summary  # rank 0 writes every file
    models.save_checkpoint(model_path, model, arch=arch, classes=stats["classes"],
                           params={"train": dataclasses.asdict(cfg),
                                   "augment": dataclasses.asdict(aug)},
                           info={"best_epoch": result.best_epoch, "best": result.best},
                           task=task)
    write_json(metrics_path, summary)  # last: its presence means the run completed
    if state_path is not None:
        state_path.unlink(missing_ok=True)
        clean_stale(state_path)  # a temporary a killed earlier save left behind
    return summary


def _imagenet(cfg: TrainParams, weights_dir: Path | None) -> dict | None:
    if not cfg.pretrained:
        return None
    state = weights.load(weights_dir) if weights_dir is not None else None
    if state is None:
        where = weights_dir or "the weights directory (--weights)"
        raise PipelineError(f"{where}: holds no ImageNet weights, but 'train.pretrained' is "
                            "true; run 'dvc repro pretrained' (stage train)")
    return state


def main(args) -> None:
    cfg = load_section(args.params, "train", stage="train")
    aug = load_section(args.params, "augment", stage="train")
    check(cfg)
    check_augment(aug)
    gpus.pin(cfg.device, count=cfg.nproc)  # MEDPIPE_GPUS: a free GPU per process
    if cfg.nproc > 1 and not distributed.under_torchrun():
        argv = [part for key, value in vars(args).items() for part in (f"--{key}", str(value))]
        sys.exit(distributed.relaunch(cfg.nproc, "stages.train", argv))
    if int(os.environ.get("RANK", "0")) != 0:  # ranks > 0 compute; rank 0 logs and writes
        logging.getLogger().setLevel(logging.WARNING)
        train(cfg, aug, Path(args.data), Path(args.model), Path(args.metrics),
              Path(args.preview), state_path=Path(args.state), weights_dir=Path(args.weights))
        return
    from dvclive import Live  # DVC lives in the stage shell only; the engine runs without it

    for path in (Path(args.model), Path(args.metrics), Path(args.preview)):
        path.unlink(missing_ok=True)  # no stale output survives a failed run
        clean_stale(path)
    with Live(dir=args.live, dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            live.step = epoch
            for name, value in metrics.items():
                split, _, metric = name.partition("_")
                live.log_metric(f"{split}/{metric}", value, plot=True)
            live.next_step()

        train(cfg, aug, Path(args.data), Path(args.model), Path(args.metrics),
              Path(args.preview), on_epoch=on_epoch, state_path=Path(args.state),
              weights_dir=Path(args.weights))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--model", default="models/model.pt", help="model file to write")
    p.add_argument("--metrics", default="metrics/train.json", help="train metrics JSON")
    p.add_argument("--live", default="metrics/train", help="DVCLive directory (curves)")
    p.add_argument("--preview", default="metrics/augment_preview.png",
                   help="PNG grid of augmented training images")
    p.add_argument("--weights", default="models/pretrained",
                   help="ImageNet weights directory (pretrained stage), read if train.pretrained")
    p.add_argument("--state", default="models/train_state.pt",
                   help="per-epoch training state for resuming a killed run (not a DVC output)")
    return p


if __name__ == "__main__":
    cli.run("train", main, get_args_parser())
