"""The plan's trials: its own store of the train and val splits at each side a
candidate sees, and one trial trained by the one training function
(:func:`medpipe.training.run.train_model`) on a stratified part of the training split
and scored on the validation split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medpipe.data import store
from medpipe.data.pixels import resize_store_pixels
from medpipe.data.prepare import chunk_rows
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.planning import fingerprint, rules, search
from medpipe.training import run
from medpipe.utils.seeding import seed_everything


@dataclass
class Context:
    """What the plan reads once: its store of the train and val splits at the largest
    side, the fingerprint, the device; the splits at each side as they are needed."""

    data_dir: Path
    fp: fingerprint.Fingerprint
    device: torch.device
    batch: int
    sides: dict[int, tuple[dict, store.Split, store.Split]] = field(default_factory=dict)

    def at(self, side: int) -> tuple[dict, store.Split, store.Split]:
        """(stats, train, val) with the images at ``side``."""
        if side not in self.sides:
            self.sides[side] = at_side(self.data_dir, side)
        return self.sides[side]


def at_side(data_dir: Path, side: int) -> tuple[dict, store.Split, store.Split]:
    """(stats, train, val) of the plan's store with the images resized to ``side``, as
    the store would hold them at that side; the statistics of the resized train split."""
    stats = store.read_stats(data_dir)
    train, val = (store.load_split(data_dir, name) for name in fingerprint.PLAN_SPLITS)
    if side == stats["image_size"]:
        return stats, train, val
    train, val = (store.Split(resized(s.images, side), np.asarray(s.labels))
                  for s in (train, val))
    pixels = train.images.transpose(1, 0, 2, 3).reshape(train.images.shape[1], -1)
    x = pixels.astype(np.float64) / 255.0
    return ({**stats, "image_size": side, "mean": [round(float(v), 6) for v in x.mean(1)],
             "std": [round(float(v), 6) for v in x.std(1)]}, train, val)


def resized(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``(N, C, S, S)`` images at ``side``, converted in chunks."""
    n, c = images.shape[:2]
    out = np.empty((n, c, side, side), dtype=np.uint8)
    rows = chunk_rows(c, max(side, images.shape[-1]))
    for a in range(0, n, rows):
        out[a:a + rows] = resize_store_pixels(images[a:a + rows], side).numpy()
    return out


def trainer(ctx: Context, n_images: int) -> search.Train:
    """A trial: ``config`` trained for ``epochs`` on ``n_images`` of the training split
    (stratified) by the one training function, scored on the validation split."""
    def train_trial(config: search.Config, epochs: int) -> tuple[float, float]:
        stats, train, val = ctx.at(config.candidate.input_size)
        subset = stratified(train, n_images, ctx.fp.task)
        cfg, aug = trial_params(config, epochs, ctx.batch, ctx.device.type, ctx.fp,
                                len(subset.labels))
        seed_everything(cfg.seed, cfg.deterministic)
        trained = run.train_model(cfg, aug, stats, subset, val, ctx.data_dir, ctx.device)
        best = trained.result.best
        return best["val_auc"], best["val_balanced_accuracy"]

    return train_trial


def trial_params(config: search.Config, epochs: int, batch: int, device: str,
                 fp: fingerprint.Fingerprint, n_train: int | None = None
                 ) -> tuple[TrainParams, AugmentParams]:
    """The train and augment params a trial of ``config`` runs with: the keys the plan
    would write for it (:func:`rules.decide`) over params.yaml's defaults."""
    n = fp.n_train if n_train is None else n_train
    steps_per_epoch = math.ceil(n / batch)
    warmup = rules.warmup_epochs(epochs, steps_per_epoch) if config.warmup else 0.0
    cfg = TrainParams(
        model=config.candidate.model, small_input=config.candidate.small_input,
        optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
        schedule=config.schedule, warmup_epochs=warmup,
        label_smoothing=config.label_smoothing, balance=config.balance,
        precision=config.candidate.precision,
        ema=rules.averaging(epochs * steps_per_epoch) if config.average else 0.0,
        batch_size=batch, epochs=epochs, device=device)
    return cfg, AugmentParams(affine_p=config.affine_p)


def stratified(split: store.Split, n: int, task: str) -> store.Split:
    """``n`` images of ``split`` with its class shares (multi-label: drawn at random), in
    the store's order; the whole split when it has at most ``n``."""
    total = len(split.labels)
    if n >= total:
        return split
    rng = np.random.default_rng(0)
    if task == "multilabel":
        keep = rng.choice(total, n, replace=False)
    else:
        labels = np.asarray(split.labels)
        keep = np.concatenate([
            rng.choice(idx, max(1, round(n * len(idx) / total)), replace=False)
            for idx in (np.flatnonzero(labels == k) for k in np.unique(labels))])
    keep = np.sort(keep)
    return store.Split(np.asarray(split.images[keep]), np.asarray(split.labels[keep]))
