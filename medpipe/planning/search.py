"""Validated choices: configurations trained briefly on the training split, ranked on the
validation split, by synchronous successive halving.

The rules (:mod:`medpipe.planning.rules`) bound and order the search: the models and
sides whose final training fits the budget, and the first configurations tried (the
rules' own choice, ResNet-18 as the MedMNIST v2 paper trains it, the default small
CNN); Sobol points (:mod:`medpipe.planning.space`) spread the rest over model, side and
stem, learning rate, weight decay, class balance, augmentation strength, label
smoothing, weight averaging and schedule.

Successive halving with restarts (Jamieson and Talwalkar 2016; one bracket of
Hyperband): every configuration trains ``e`` epochs (at least ``MIN_TRIAL_STEPS`` steps)
with a complete schedule of that length; the best third, and the rules' choice (short
trials rank a high learning rate and weight averaging low before they pay off: on
BreastMNIST the hand recipe's configuration ranked 8th of 10 at five epochs), train again
from scratch for ``ETA * e`` epochs; the best of those wins. A rung is scored whole before
any trial is promoted, so the order trials finish in does not count. A winner in bf16
may train once more in the device's default precision (:func:`check_precision`): bf16
stays only where it wins on the validation split by more than the split's noise.

"Best" follows the one-standard-error rule (:mod:`medpipe.planning.selection`): a
challenger replaces a configuration tried before it only where it wins by more than the
validation split's noise. Why the halving is run here and not by Optuna's asynchronous
pruners: docs/planning.md.

The budget is counted in seconds at the rungs of the timed rates
(:func:`~medpipe.planning.rates.rung`), never on a clock: trial sizes, their number and
the winner's epochs follow from the rates' rungs, and the trials themselves train
deterministically, so one store, budget and device kind give one plan.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from medpipe.planning import selection
from medpipe.planning.fingerprint import Fingerprint
from medpipe.planning.rates import Candidate
from medpipe.utils.progress import track

log = logging.getLogger(__name__)

PerEpoch = Callable[[Candidate, int], float]  # (candidate, training images) -> seconds
Train = Callable[["Config", int], tuple[float, float]]  # (config, epochs) -> val AUC, ACC

ETA = 3  # the halving factor: a third of each rung goes on, for three times the epochs
MAX_CONFIGS = 12  # configurations in the first rung, at most
MIN_CONFIGS = 3  # fewer is no search
FIRST_RUNG_EPOCHS = (2, 5)  # epochs of a first-rung trial: preferred at least, at most
# A first-rung trial trains at least this many steps (more epochs on a small split): on
# BreastMNIST (9 steps an epoch) 2-epoch trials ranked the hand recipe's configuration 7th
# of ten, though it scores best trained in full; the other sets have 44+ steps an epoch.
MIN_TRIAL_STEPS = 40
SEARCH_SHARE = 0.4  # of the usable budget, for the trials (planner.laid_out)
TRIAL_IMAGES = 3000  # a trial trains on at most this many training images (stratified)


@dataclass(frozen=True)
class Config:
    """One configuration the search may train."""

    candidate: Candidate
    lr: float
    weight_decay: float
    balance: str
    affine_p: float
    label_smoothing: float
    average: bool
    schedule: str
    optimizer: str = "adamw"
    warmup: bool = True  # the rate rises over a fifth of the epochs (rules.warmup_epochs)
    origin: str = "sobol"  # where it comes from: a rule, an anchor, or the Sobol sequence

    def as_dict(self) -> dict:
        return {"model": self.candidate.model, "input_size": self.candidate.input_size,
                "small_input": self.candidate.small_input,
                "precision": self.candidate.precision, "optimizer": self.optimizer,
                "lr": self.lr, "weight_decay": self.weight_decay, "balance": self.balance,
                "affine_p": self.affine_p, "label_smoothing": self.label_smoothing,
                "average": self.average, "schedule": self.schedule, "warmup": self.warmup}


@dataclass
class Trial:
    """A configuration trained for ``epochs`` in rung ``rung``, and its validation figures."""

    number: int
    config: Config
    rung: int
    epochs: int
    planned_seconds: float  # at the rates' rungs: what the budget counts
    val_auc: float = math.nan
    val_balanced_accuracy: float = math.nan
    se: float = 0.0  # the score's standard error on the validation split
    seconds: float = 0.0  # measured, for the record only
    winner: bool = False

    @property
    def score(self) -> float:
        """What trials are ranked by: the mean of the validation AUC and balanced accuracy
        (NaN, a degenerate split, ranks last). Neither depends on the split's class mix:
        a validation split drawn with the training images' mix ranks a model fitted to
        that mix (no class weighting) above one that is not, by plain accuracy, however
        the images it will be used on are mixed."""
        value = (self.val_auc + self.val_balanced_accuracy) / 2
        return value if math.isfinite(value) else -math.inf

    def as_dict(self) -> dict:
        return {"trial": self.number, "origin": self.config.origin, "rung": self.rung,
                "epochs": self.epochs, **self.config.as_dict(),
                "val_auc": _round(self.val_auc),
                "val_balanced_accuracy": _round(self.val_balanced_accuracy),
                "score": _round(self.score), "score_se": _round(self.se),
                "planned_seconds": round(self.planned_seconds, 1),
                "seconds": round(self.seconds, 1), "winner": self.winner}


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


@dataclass
class Search:
    """The halving's layout, sized before any trial, and its trials once run."""

    configs: list[Config]
    first_epochs: int
    trial_images: int
    val: tuple[str, int, tuple[int, ...]] = ("binary", 0, ())  # task, images, per class
    trials: list[Trial] = field(default_factory=list)

    @property
    def planned_seconds(self) -> float:
        return sum(t.planned_seconds for t in self.trials)

    @property
    def models(self) -> set[Candidate]:  # the models its configurations train
        return {c.candidate for c in self.configs}

    @property
    def winner(self) -> Trial:
        return next(t for t in self.trials if t.winner)

    def summary(self, budget_seconds: float) -> dict:
        """For metrics/plan.json: the layout, and the budget's share the trials took."""
        return {"configurations": len(self.configs), "eta": ETA,
                "selection": "one standard error: ties go to the first in the rules' order",
                "rung_epochs": [self.first_epochs, ETA * self.first_epochs],
                "trial_images": self.trial_images,
                "planned_seconds": round(self.planned_seconds, 1),
                "share_of_budget": round(self.planned_seconds / budget_seconds, 3)}


def trial_images(fp: Fingerprint) -> int:
    return min(fp.n_train, TRIAL_IMAGES)


def layout(fp: Fingerprint, pool: list[Config], per_epoch: PerEpoch, seconds: float,
           batch: int) -> Search:
    """How many of ``pool`` to try and for how many first-rung epochs, within ``seconds``
    at ``per_epoch(candidate, training images)``: the most configurations whose first rung
    gets the least epochs wanted (``FIRST_RUNG_EPOCHS[0]``, and ``MIN_TRIAL_STEPS`` steps
    of ``batch`` images), else ``MIN_CONFIGS`` configurations with as many epochs as fit;
    the first rung's epochs as many as fit, at most ``FIRST_RUNG_EPOCHS[1]`` or the least
    wanted. Raises if not even ``MIN_CONFIGS`` one-epoch trials fit."""
    n_images = trial_images(fp)
    want = max(FIRST_RUNG_EPOCHS[0], math.ceil(MIN_TRIAL_STEPS / math.ceil(n_images / batch)))
    val = (fp.task, fp.images["val"], tuple(fp.val_counts.values()))

    def epochs_for(configs: list[Config]) -> int:
        return math.floor(seconds / _one_epoch_search(configs, per_epoch, n_images))

    for n in range(min(MAX_CONFIGS, len(pool)), MIN_CONFIGS - 1, -1):
        if epochs_for(pool[:n]) >= want:
            epochs = min(max(FIRST_RUNG_EPOCHS[1], want), epochs_for(pool[:n]))
            return Search(pool[:n], epochs, n_images, val)
    smallest = pool[:MIN_CONFIGS]
    if epochs_for(smallest) >= 1:
        return Search(smallest, epochs_for(smallest), n_images, val)
    raise TooSmall(n_images, smallest, _one_epoch_search(smallest, per_epoch, n_images))


def _one_epoch_search(configs: list[Config], per_epoch: PerEpoch, n_images: int) -> float:
    """Seconds of one-epoch trials of ``configs`` and ``ETA`` epochs of the costliest
    of them that the second rung may train (the most it can cost)."""
    costs = sorted((per_epoch(c.candidate, n_images) for c in configs), reverse=True)
    return sum(costs) + ETA * sum(costs[:promoted(len(configs))])


def promoted(n: int) -> int:
    """The most of ``n`` configurations in the second rung: the best third, rules' choice."""
    return min(n, math.ceil(n / ETA) + 1)


class TooSmall(Exception):
    """Not even the smallest search fits: ``configs`` at one epoch need ``seconds``."""

    def __init__(self, n_images: int, configs: list[Config], seconds: float):
        super().__init__(n_images)
        self.n_images, self.configs, self.seconds = n_images, configs, seconds


def run(search: Search, train: Train, per_epoch: PerEpoch) -> Search:
    """Train the first rung, promote the best third and the rules' choice (the first
    configuration) to ``ETA`` times the epochs, and mark the best trial of the last rung
    the winner. ``train(config, epochs)`` returns a trial's validation AUC and balanced
    accuracy."""
    alive, epochs = list(search.configs), search.first_epochs
    for rung in range(2):
        results = selection.ranked(_rung(search, alive, rung, epochs, train, per_epoch),
                                   search.configs)
        if rung == 1 or len(results) == 1:
            break
        best = results[:math.ceil(len(results) / ETA)]
        alive = [t.config for t in best] + [
            t.config for t in results if t.config == search.configs[0] and t not in best]
        epochs *= ETA
    results[0].winner = True
    return search


def check_precision(search: Search, train: Train, per_epoch: PerEpoch) -> Trial:
    """Train the winner, a bf16 one, again in the device's default precision for as many
    epochs; bf16 stays the winner only where it beats that trial by more than a standard
    error: the default precision comes first in the order, as the rules' choice does
    among configurations (on a CPU, bf16 training cost test AUC on both sets measured;
    docs/planning.md). The check's trial."""
    bf16 = search.winner
    check = _rung(search, [in_default_precision(bf16.config)], bf16.rung + 1, bf16.epochs,
                  train, per_epoch)[0]
    bf16.winner = False
    selection.ranked([check, bf16], [check.config, bf16.config])[0].winner = True
    return check


def in_default_precision(config: Config) -> Config:
    """``config`` in the device's default precision (fp32 on a CPU)."""
    return replace(config, candidate=replace(config.candidate, precision="auto"))


def _rung(search: Search, configs: list[Config], rung: int, epochs: int, train: Train,
          per_epoch: PerEpoch) -> list[Trial]:
    """Train ``configs`` for ``epochs`` each, as trials of ``rung``; their trials."""
    out = []
    for config in track(configs, f"plan: rung {rung}", unit="trial"):
        trial = Trial(len(search.trials), config, rung, epochs,
                      epochs * per_epoch(config.candidate, search.trial_images))
        log.info("trial %d (rung %d, %d epoch%s): %s", trial.number, rung, epochs,
                 "s" * (epochs != 1), config.as_dict())
        start = time.perf_counter()
        trial.val_auc, trial.val_balanced_accuracy = train(config, epochs)
        trial.seconds = time.perf_counter() - start
        trial.se = selection.standard_error(trial.val_auc, trial.val_balanced_accuracy,
                                            *search.val)
        log.info("trial %d: val AUC %.4f, balanced accuracy %.4f, score %.4f +- %.4f",
                 trial.number, trial.val_auc, trial.val_balanced_accuracy, trial.score,
                 trial.se)
        search.trials.append(trial)
        out.append(trial)
    return out
