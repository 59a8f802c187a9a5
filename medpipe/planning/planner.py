"""The plan: fingerprint the store, time the candidate models, search the configurations
on the validation split, and size the winner's training to the rest of the budget.

Without DVC, as a GPU machine or a benchmark runs it::

    from medpipe.planning.planner import make_plan
    sections, report = make_plan(Path("data/prepared"), None, 10.0, torch.device("cpu"))
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from medpipe.data import store
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.planning import fingerprint, rates, rules, search
from medpipe.training import run
from medpipe.utils import devices
from medpipe.utils.seeding import seed_everything

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What the plan reads once: the store, its splits (train and val only), the device."""

    data_dir: Path
    fp: fingerprint.Fingerprint
    stats: dict
    train: store.Split
    val: store.Split
    device: torch.device
    batch: int


def make_plan(data_dir: Path, raw_dir: Path | None, budget_minutes: float,
              device: torch.device, timed_steps: int = 10) -> tuple[dict, dict]:
    """(the recipe sections, the report for metrics/plan.json) of a plan for the store
    at ``data_dir`` within ``budget_minutes`` on ``device``: the trials and the winner's
    training. Reads the store's train and val splits only."""
    start = time.perf_counter()
    fp = fingerprint.read(data_dir, raw_dir)
    rules.check_trainable(fp, str(data_dir))
    train, val = (store.load_split(data_dir, name) for name in fingerprint.PLAN_SPLITS)
    ctx = Context(data_dir, fp, store.read_stats(data_dir), train, val, device,
                  rules.batch_size(fp, device.type))
    usable = budget_minutes * 60 * rules.USABLE
    timed = time_candidates(ctx, usable * (1 - search.SEARCH_SHARE), timed_steps)
    fits = rules.fitting(timed)
    rung_of = {t.candidate: t.rung for t in timed}

    def per_epoch(candidate: rates.Candidate, n_images: int) -> float:
        return rules.per_epoch(fp, rung_of[candidate], n_images)

    pool = search.space(fp, [t.candidate for t in fits], rules.anchors(fp, fits))
    # The trials take their share, and what the winner's final training could not use
    # within MAX_EPOCHS whichever searched model wins.
    longest = max(rules.MAX_EPOCHS * per_epoch(t.candidate, fp.n_train) for t in fits)
    trial_seconds = usable - min(usable * (1 - search.SEARCH_SHARE), longest)
    try:
        layout = search.layout(fp, pool, per_epoch, trial_seconds)
    except search.TooSmall as e:
        need = e.smallest_search_seconds(per_epoch(fits[0].candidate, e.n_images))
        raise search.too_small(budget_minutes, rules.USABLE * search.SEARCH_SHARE, need,
                               f"{search.MIN_CONFIGS} one-epoch trials of the cheapest "
                               f"model ({fits[0].candidate.name}, {e.n_images} training "
                               f"images at about {fits[0].rung:.0f} images/s on "
                               f"{device.type}) and the best one's {search.ETA} epochs"
                               ) from None
    searched = search.run(layout, trainer(ctx, layout.trial_images), per_epoch)
    winner = searched.winner
    epochs = max(1, min(rules.MAX_EPOCHS, math.floor(
        (usable - searched.planned_seconds) / per_epoch(winner.config.candidate, fp.n_train))))
    why = (f"trial {winner.number}: the best validation score (mean of AUC and accuracy) "
           f"of {len(layout.configs)} configurations by successive halving")
    choices = rules.decide(fp, winner.config, epochs, ctx.batch, device.type, why)
    report = {"planned": True, "budget_minutes": budget_minutes, "device": device.type,
              "fingerprint": fp.as_dict(),
              "candidates": [{"name": t.candidate.name,
                              "images_per_second": t.images_per_second, "rung": t.rung,
                              "searched": t in fits} for t in timed],
              "search": searched.summary(usable / rules.USABLE),
              "trials": [t.as_dict() for t in searched.trials], "winner": winner.number,
              "chosen": winner.config.candidate.name,
              "choices": {key: {"value": value, "reason": why}
                          for key, (value, why) in choices.items()},
              "plan_seconds": round(time.perf_counter() - start, 2)}
    return sections_of(choices), report


def time_candidates(ctx: Context, final_seconds: float, steps: int) -> list[rules.Timed]:
    """The candidates timed as the rules ask (:func:`rules.time_candidates`), each with
    its hand-recipe settings, augmented and averaged: the costliest step its trials may
    take. On a CPU with bf16 arithmetic, each also with bf16 autocast."""
    def measure(candidate: rates.Candidate, batch: int) -> float:
        cfg, _ = trial_params(rules.recipe_config(ctx.fp, candidate), 1, batch,
                              ctx.device.type, ctx.fp)
        rate = rates.measure(candidate, replace(cfg, ema=0.99), AugmentParams(affine_p=0.5),
                             ctx.stats, ctx.train, ctx.val, ctx.data_dir, ctx.device, steps)
        log.info("%s: %.1f images/s (rung %.1f)", candidate.name, rate, rates.rung(rate))
        return rate

    bf16 = ctx.device.type == "cpu" and devices.cpu_bf16()
    return rules.time_candidates(ctx.fp, ctx.device.type, final_seconds, measure, bf16)


def trainer(ctx: Context, n_images: int) -> search.Train:
    """A trial: ``config`` trained for ``epochs`` on ``n_images`` of the training split
    (stratified) by the one training function, scored on the validation split."""
    subset = stratified(ctx.train, n_images, ctx.fp.task)

    def train_trial(config: search.Config, epochs: int) -> tuple[float, float]:
        cfg, aug = trial_params(config, epochs, ctx.batch, ctx.device.type, ctx.fp,
                                len(subset.labels))
        seed_everything(cfg.seed, cfg.deterministic)
        trained = run.train_model(cfg, aug, ctx.stats, subset, ctx.val, ctx.data_dir,
                                  ctx.device, input_size=config.candidate.input_size)
        return trained.result.best["val_auc"], trained.result.best["val_accuracy"]

    return train_trial


def trial_params(config: search.Config, epochs: int, batch: int, device: str,
                 fp: fingerprint.Fingerprint, n_train: int | None = None
                 ) -> tuple[TrainParams, AugmentParams]:
    """The train and augment params a trial of ``config`` runs with: the keys the plan
    would write for it (:func:`rules.decide`) over params.yaml's defaults."""
    n = fp.n_train if n_train is None else n_train
    steps_per_epoch = math.ceil(n / batch)
    cfg = TrainParams(
        model=config.candidate.model, small_input=config.candidate.small_input,
        optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
        schedule=config.schedule, warmup_epochs=rules.warmup_epochs(epochs, steps_per_epoch),
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


def sections_of(choices: dict[str, tuple[object, str]]) -> dict[str, dict]:
    """The recipe's sections of planned ``{"section.key": (value, reason)}`` choices."""
    sections: dict[str, dict] = {}
    for key, (value, _) in choices.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return sections
