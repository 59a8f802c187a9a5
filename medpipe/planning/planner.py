"""The plan: fingerprint the data, time the candidate models, search the configurations
on the validation split, and size the winner's training to the rest of the budget.

The plan comes before the store, in nnU-Net's order (fingerprint, plan, preprocess): it
prepares its own train and val images from the raw dataset, with the prepare stage's
split and code (the test split's images are never decoded), at the largest side a
candidate may see, and derives the smaller sides from them. The side it chooses is the
one the prepare stage then stores from the source images, so no model resizes its input.

The time the plan spends outside the trials (decoding, timing) is measured and taken
from the budget in steps of ``OVERHEAD_STEP`` of it, so that clock noise moves a plan
only where it crosses a step.

Without DVC, as a GPU machine or a benchmark runs it::

    from medpipe.planning.planner import make_plan
    sections, report = make_plan(Path("data/raw"), PrepareParams(), 10.0,
                                 torch.device("cpu"))
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from medpipe import PipelineError
from medpipe.data import store
from medpipe.data.pixels import resize_store_pixels
from medpipe.data.prepare import chunk_rows
from medpipe.data.prepare import prepare as prepare_store
from medpipe.data.sources import registry
from medpipe.params.sections import AugmentParams, PrepareParams, TrainParams
from medpipe.planning import fingerprint, rates, rules, search
from medpipe.training import run
from medpipe.utils import devices
from medpipe.utils.seeding import seed_everything

log = logging.getLogger(__name__)

OVERHEAD_STEP = 0.05  # of the budget: the measured overhead is rounded up to this step


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


def make_plan(raw_dir: Path, prepare_cfg: PrepareParams, budget_minutes: float,
              device: torch.device, timed_steps: int = 10) -> tuple[dict, dict]:
    """(the recipe sections, the report for metrics/plan.json) of a plan for the raw
    dataset at ``raw_dir``, split and prepared as ``prepare_cfg`` says, within
    ``budget_minutes`` on ``device``: the trials and the winner's training. Reads the
    train and val splits only."""
    start = time.perf_counter()
    budget = budget_minutes * 60
    with tempfile.TemporaryDirectory(prefix="medpipe-plan-") as scratch:
        raw = registry.read(raw_dir)
        native = fingerprint.native_size(raw, raw_dir)
        top = rules.top_side(prepare_cfg.image_size, native)
        data_dir = Path(scratch) / "store"
        prepare_store(raw, data_dir, replace(prepare_cfg, image_size=top, folds=0),
                      find_duplicates=False, only=fingerprint.PLAN_SPLITS)
        fp = fingerprint.read(data_dir, native, prepare_cfg.image_size)
        rules.check_trainable(fp, str(raw_dir))
        ctx = Context(data_dir, fp, device, rules.batch_size(fp, device.type))
        prepared_seconds = time.perf_counter() - start
        estimate = budget * (rules.USABLE - overhead_share(prepared_seconds, budget))
        timed = time_candidates(ctx, estimate * (1 - search.SEARCH_SHARE), timed_steps)
        before_trials = time.perf_counter() - start
        overhead = overhead_share(before_trials, budget)
        report = search_and_decide(ctx, timed, budget * (rules.USABLE - overhead),
                                   budget_minutes, before_trials)
    report["overhead"] = {"prepare_seconds": round(prepared_seconds, 2),
                          "timing_seconds": round(before_trials - prepared_seconds, 2),
                          "share_of_budget": overhead}
    sections = report.pop("sections")
    report["plan_seconds"] = round(time.perf_counter() - start, 2)
    return sections, report


def overhead_share(seconds: float, budget: float) -> float:
    """The share of the budget spent before the trials, rounded up to ``OVERHEAD_STEP``."""
    return round(max(1, math.ceil(seconds / budget / OVERHEAD_STEP)) * OVERHEAD_STEP, 2)


def search_and_decide(ctx: Context, timed: list[rules.Timed], usable: float,
                      budget_minutes: float, overhead_seconds: float) -> dict:
    """Search the candidates that fit within ``usable`` seconds, trials and the winner's
    training together; the report, with the recipe's ``sections``. ``overhead_seconds``:
    what the plan took before, for the error that a budget is too small."""
    fp, device = ctx.fp, ctx.device
    rung_of = {t.candidate: t.rung for t in timed}

    def per_epoch(candidate: rates.Candidate, n_images: int) -> float:
        return rules.per_epoch(fp, rung_of[candidate], n_images)

    try:
        layout = laid_out(fp, rules.fitting(timed), per_epoch, usable, ctx.batch)
    except search.TooSmall as e:
        least = ((overhead_seconds + e.seconds / search.SEARCH_SHARE)
                 / (rules.USABLE - OVERHEAD_STEP))  # the overhead is rounded up to a step
        names = ", ".join(dict.fromkeys(  # configurations of one model: named once
            f"{c.candidate.name} at about {rung_of[c.candidate]:.0f} images/s"
            for c in e.configs))
        raise too_small(budget_minutes, least, e.seconds,
                        f"{len(e.configs)} one-epoch trials of {e.n_images} training "
                        f"images ({names} on {device.type}) and the best one's "
                        f"{search.ETA} epochs") from None
    searched = search.run(layout, trainer(ctx, layout.trial_images), per_epoch)
    winner = searched.winner
    epochs = max(1, min(rules.MAX_EPOCHS, math.floor(
        (usable - searched.planned_seconds) / per_epoch(winner.config.candidate, fp.n_train))))
    why = (f"trial {winner.number}: the best validation score (mean of AUC and accuracy) "
           f"of {len(layout.configs)} configurations by successive halving, ties within "
           "one standard error going to the first in the rules' order")
    choices = rules.decide(fp, winner.config, epochs, ctx.batch, device.type, why)
    return {"planned": True, "budget_minutes": budget_minutes, "device": device.type,
            "fingerprint": fp.as_dict(),
            "candidates": [{"name": t.candidate.name,
                            "images_per_second": t.images_per_second, "rung": t.rung,
                            "searched": t.candidate in layout.models} for t in timed],
            "search": searched.summary(budget_minutes * 60),
            "trials": [t.as_dict() for t in searched.trials], "winner": winner.number,
            "chosen": winner.config.candidate.name,
            "choices": {key: {"value": value, "reason": why}
                        for key, (value, why) in choices.items()},
            "sections": sections_of(choices)}


def laid_out(fp: fingerprint.Fingerprint, fits: list[rules.Timed],
             per_epoch: search.PerEpoch, usable: float, batch: int) -> search.Search:
    """The search within ``usable`` seconds, trials and the winner's training together,
    over the models of ``fits`` (cheapest first) less the costliest ones its trials do
    not fit with. The trials take their share of ``usable``, and what the winner's final
    training could not use within ``MAX_EPOCHS`` whichever searched model wins.

    A costlier model, which a larger budget admits, is searched only where the search's
    trials fit with it too, so a budget larger than one that plans also plans. Raises
    :class:`search.TooSmall` for the cheapest model where none fits."""
    models = list(fits)
    while True:
        pool = search.space(fp, [t.candidate for t in models], rules.anchors(fp, models))
        longest = max(rules.MAX_EPOCHS * per_epoch(t.candidate, fp.n_train) for t in models)
        seconds = usable - min(usable * (1 - search.SEARCH_SHARE), longest)
        try:
            return search.layout(fp, pool, per_epoch, max(seconds, 0.0), batch)
        except search.TooSmall:
            costliest = replace(models[-1].candidate, precision="auto")
            cheaper = [t for t in models if replace(t.candidate, precision="auto") != costliest]
            if not cheaper:
                raise
            models = cheaper


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


def time_candidates(ctx: Context, final_seconds: float, steps: int) -> list[rules.Timed]:
    """The candidates timed as the rules ask (:func:`rules.time_candidates`), each with
    its hand-recipe settings, augmented and averaged: the costliest step its trials may
    take. On a CPU with bf16 arithmetic, each also with bf16 autocast."""
    def measure(candidate: rates.Candidate, batch: int) -> float:
        cfg, _ = trial_params(rules.recipe_config(ctx.fp, candidate), 1, batch,
                              ctx.device.type, ctx.fp)
        stats, train, val = ctx.at(candidate.input_size)
        rate = rates.measure(candidate, replace(cfg, ema=0.99), AugmentParams(affine_p=0.5),
                             stats, train, val, ctx.data_dir, ctx.device, steps)
        log.info("%s: %.1f images/s (rung %.1f)", candidate.name, rate, rates.rung(rate))
        return rate

    bf16 = ctx.device.type == "cpu" and devices.cpu_bf16()
    return rules.time_candidates(ctx.fp, ctx.device.type, final_seconds, measure, bf16)


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


def too_small(budget_minutes: float, least_seconds: float, seconds_needed: float, what: str
              ) -> PipelineError:
    """The one-line error: ``what`` needs ``seconds_needed`` of trials, and a budget of
    ``least_seconds`` leaves that much."""
    need = math.ceil(least_seconds / 60 * 100) / 100
    took = (f"{seconds_needed:.1f} s" if seconds_needed < 60
            else f"{seconds_needed / 60:.2f} minutes")
    return PipelineError(f"params.yaml: 'plan.budget_minutes' {budget_minutes} is too "
                         f"small: {what} need {took}; set at least {need} (stage plan)")
