"""The plan: fingerprint the data, time the candidate models, search the configurations
on the validation split, check a bf16 winner against fp32, and size the winner's
training to the rest of the budget.

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
from dataclasses import replace
from pathlib import Path

import torch

from medpipe import PipelineError
from medpipe.data.prepare import prepare as prepare_store
from medpipe.data.sources import registry
from medpipe.params.loading import defaults
from medpipe.params.sections import AugmentParams, PrepareParams
from medpipe.planning import fingerprint, rates, rules, search, space, trials
from medpipe.utils import devices

log = logging.getLogger(__name__)

OVERHEAD_STEP = 0.05  # of the budget: the measured overhead is rounded up to this step


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
        side_set = prepare_cfg.image_size != defaults("prepare")["image_size"]
        top = rules.top_side(prepare_cfg.image_size, native, side_set)
        data_dir = Path(scratch) / "store"
        prepare_store(raw, data_dir, replace(prepare_cfg, image_size=top, folds=0),
                      find_duplicates=False, only=fingerprint.PLAN_SPLITS)
        fp = fingerprint.read(data_dir, native, prepare_cfg.image_size, side_set)
        rules.check_trainable(fp, str(raw_dir))
        ctx = trials.Context(data_dir, fp, device, rules.batch_size(fp, device.type))
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


def search_and_decide(ctx: trials.Context, timed: list[rules.Timed], usable: float,
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
    train = trials.trainer(ctx, layout.trial_images)
    searched = search.run(layout, train, per_epoch)
    precision = checked_precision(fp, searched, train, per_epoch, usable)
    winner = searched.winner
    epochs = max(1, min(rules.MAX_EPOCHS, math.floor(
        (usable - searched.planned_seconds) / per_epoch(winner.config.candidate, fp.n_train))))
    why = (f"trial {winner.number}: the best validation score (mean of AUC and balanced accuracy) "
           f"of {len(layout.configs)} configurations by successive halving, ties within "
           "one standard error going to the first in the rules' order")
    choices = rules.decide(fp, winner.config, epochs, ctx.batch, device.type, why,
                           precision)
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


def checked_precision(fp: fingerprint.Fingerprint, searched: search.Search,
                      train: search.Train, per_epoch: search.PerEpoch, usable: float) -> str:
    """Where the winner trains in bf16, check it against the device's default precision
    on the validation split (:func:`search.check_precision`) if the budget holds the
    check and, after it, the least epochs (``rules.MIN_EPOCHS``) of the final training in
    that precision; the reason for ``train.precision``, for the winner then marked."""
    bf16 = searched.winner
    if bf16.config.candidate.precision != "bf16":
        return rules.PRECISION_WHY[bf16.config.candidate.precision]
    fp32 = search.in_default_precision(bf16.config).candidate
    check = bf16.epochs * per_epoch(fp32, searched.trial_images)
    if usable - searched.planned_seconds - check < rules.MIN_EPOCHS * per_epoch(fp32,
                                                                              fp.n_train):
        return (f"{rules.PRECISION_WHY['bf16']}; the budget holds no check against fp32 "
                f"and {rules.MIN_EPOCHS} epochs of it")
    trial = search.check_precision(searched, train, per_epoch)
    if searched.winner is trial:
        return (f"the device's default: trial {bf16.number} in bf16 did not beat trial "
                f"{trial.number} in it by more than a standard error on the validation split")
    return (f"{rules.PRECISION_WHY['bf16']}, and trial {bf16.number} in bf16 beat trial "
            f"{trial.number} in fp32 by more than a standard error on the validation split")


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
        pool = space.configurations(fp, [t.candidate for t in models], rules.anchors(fp, models))
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


def time_candidates(ctx: trials.Context, final_seconds: float, steps: int) -> list[rules.Timed]:
    """The candidates timed as the rules ask (:func:`rules.time_candidates`), each with
    its hand-recipe settings, augmented and averaged: the costliest step its trials may
    take. On a CPU with bf16 arithmetic, each also with bf16 autocast."""
    def measure(candidate: rates.Candidate, batch: int) -> float:
        cfg, _ = trials.trial_params(rules.recipe_config(ctx.fp, candidate), 1, batch,
                              ctx.device.type, ctx.fp)
        stats, train, val = ctx.at(candidate.input_size)
        rate = rates.measure(candidate, replace(cfg, ema=0.99), AugmentParams(affine_p=0.5),
                             stats, train, val, ctx.data_dir, ctx.device, steps)
        log.info("%s: %.1f images/s (rung %.1f)", candidate.name, rate, rates.rung(rate))
        return rate

    bf16 = ctx.device.type == "cpu" and devices.cpu_bf16()
    return rules.time_candidates(ctx.fp, ctx.device.type, final_seconds, measure, bf16)


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
