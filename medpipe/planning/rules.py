"""The rules that bound and order the plan's search: which models and sides fit the
budget, the batch, the configurations tried first, and the keys of the winner.

Each constant names the measurement it comes from; the table of what was tried and what
won is in docs/planning.md. The rules read the rates only through their rungs
(:func:`~medpipe.planning.rates.rung`), so a plan does not move with timing noise. The
choice among the configurations is the search's (:mod:`medpipe.planning.search`): it is
validated on the store, not fixed from the datasets the rules were measured on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from medpipe import PipelineError
from medpipe.planning.fingerprint import Fingerprint
from medpipe.planning.rates import Candidate, monotone, rung
from medpipe.planning.search import Config

# Fewest epochs a model is chosen for. PneumoniaMNIST, ResNet-18 at 48 px: 10, 11 and 12
# epochs scored within the spread of seeds; 3 epochs at 28 px lost 0.013 AUC.
MIN_EPOCHS = 10  # of the final training
MAX_EPOCHS = 30  # the default run's 30; its best epoch was 16, and longer runs gained nothing
# Share of the budget planned: the plan's own decoding and timing (measured) and the
# training steps at the rates' rungs. The rest covers what the rates leave out: malaria4000
# trials and training took 1.05 times their planned seconds.
USABLE = 0.9
VAL_COST = 0.35  # one image validated costs about a third of one trained (forward only)
# Input side: at most twice the native side (48 px from 28 px beat 64 px), at least half
# params.yaml's and 32 for a stride-32 network, at most 224 px.
SIDES = (32, 48, 64, 96, 128, 160, 224)
MAX_UPSAMPLE = 2
SMALL_STEM_MAX = 64  # the small stem keeps full resolution: only for stores up to 64 px
PAPER_SMALL_STEM_MAX = 32  # the MedMNIST v2 paper's small-stem ResNet-18 is its 28 px one
# Relative cost per pixel the stem keeps; the candidates are timed cheapest first.
COST = {"cnn": 0.05, "resnet18": 1.0, "resnet50": 2.3}
BATCH = {"cpu": 64, "cuda": 128}  # on the CPU, batch 128 did not shorten a run
MIN_STEPS_PER_EPOCH = 8  # a smaller split halves the batch, down to MIN_BATCH
MIN_BATCH = 8
IMBALANCED = 0.5  # a class-weighted loss below this smallest/largest class ratio
EMA_HORIZON = 0.1  # weights averaged over about the last tenth of the steps
EMA_MIN_STEPS = 100  # fewer steps: no average
PRECISION_WHY = {"bf16": "bf16 autocast: a rung faster on this CPU",
                 "auto": "the device's default (auto: bf16 on CUDA, fp32 on a CPU)"}


@dataclass(frozen=True)
class Timed:
    """A candidate model and its measured rate."""

    candidate: Candidate
    images_per_second: float  # measured (lowered to a smaller side's: rates.monotone)
    rung: float  # what the rules read
    final_epochs: int  # epochs of the final training that fit its share of the budget


def check_trainable(fp: Fingerprint, where: str) -> None:
    """A one-line error when the store cannot be trained on: a class with fewer training
    images than the smallest batch, or missing from the validation split."""
    for name, n in fp.train_counts.items():
        if n < MIN_BATCH:
            raise PipelineError(
                f"{where}: class '{name}' has {n} training image{'s' * (n != 1)}; a plan "
                f"needs at least {MIN_BATCH} per class (its smallest batch); add "
                f"{MIN_BATCH - n} or more images of it (stage plan)")
    missing = [name for name, n in fp.val_counts.items() if n == 0]
    if missing and fp.task != "multilabel":
        raise PipelineError(f"{where}: class '{missing[0]}' has no validation image, so no "
                            "epoch can be chosen on validation AUC; add images of it or "
                            "raise 'prepare.val_fraction' (stage plan)")


def sides(fp: Fingerprint) -> list[int]:
    """The sides the store may be prepared at: params.yaml's, and those of ``SIDES`` from
    half of it up to ``MAX_UPSAMPLE`` times the native side; only params.yaml's where it
    sets one (the prepare stage keeps a side params.yaml sets over the plan's)."""
    s = fp.image_size
    if fp.side_set:
        return [s]
    top = top_side(s, fp.native_size)
    return sorted({side for side in (*SIDES, s) if SIDES[0] <= side <= top
                   and side >= s // 2} | {s})


def top_side(image_size: int, native: int, side_set: bool = False) -> int:
    """The largest side a candidate may see (the plan decodes its images at it)."""
    return image_size if side_set else max(image_size, min(SIDES[-1], MAX_UPSAMPLE * native))


def candidates(fp: Fingerprint, device: str) -> list[Candidate]:
    """The models the plan may choose, cheapest first."""
    s = fp.image_size
    models = ["resnet18", "resnet50"] if device == "cuda" else ["resnet18"]
    out = [Candidate("cnn", s)]
    out += [Candidate(m, side) for m in models for side in sides(fp)]
    if s <= SMALL_STEM_MAX:
        out.append(Candidate("resnet18", s, small_input=True))
    return sorted(out, key=_cost)


def _cost(c: Candidate) -> tuple[float, str]:
    seen = c.input_size * (4 if c.small_input else 1)  # a standard stem strides by 4
    return COST[c.model] * seen * seen, c.name


def batch_size(fp: Fingerprint, device: str) -> int:
    batch = BATCH[device]
    while batch > MIN_BATCH and fp.n_train < MIN_STEPS_PER_EPOCH * batch:
        batch //= 2
    return batch


def per_epoch(fp: Fingerprint, rate: float, n_train: int | None = None) -> float:
    """Seconds of one epoch of ``n_train`` training images (all of them by default) and the
    validation split at ``rate`` images/s."""
    n = fp.n_train if n_train is None else n_train
    return (n + VAL_COST * fp.images["val"]) / max(rate, 1e-9)


def epochs_in(fp: Fingerprint, rate: float, seconds: float) -> int:
    """Epochs of training and validation that fit ``seconds`` at ``rate`` images/s."""
    return min(MAX_EPOCHS, math.floor(seconds / per_epoch(fp, rate)))


def time_candidates(fp: Fingerprint, device: str, final_seconds: float,
                    measure: Callable[[Candidate, int], float], bf16: bool = False
                    ) -> list[Timed]:
    """Time the candidates cheapest first (``measure(candidate, batch)`` -> images/s)
    until one no longer fits ``MIN_EPOCHS`` of final training in ``final_seconds``;
    with ``bf16``, each also with bf16 autocast."""
    batch = batch_size(fp, device)
    measured: dict[Candidate, float] = {}
    for cand in candidates(fp, device):
        variants = [cand, replace(cand, precision="bf16")] if bf16 else [cand]
        for variant in variants:
            measured[variant] = measure(variant, batch)
        now = monotone(measured)
        if max(epochs_in(fp, rung(now[v]), final_seconds) for v in variants) < MIN_EPOCHS:
            break
    return [Timed(c, round(rate, 1), rung(rate), epochs_in(fp, rung(rate), final_seconds))
            for c, rate in monotone(measured).items()]


def fitting(timed: list[Timed]) -> list[Timed]:
    """The candidates whose final training fits ``MIN_EPOCHS`` (none: the cheapest), a
    bf16 one only where it is a rung faster than the same model in the default precision."""
    default = {replace(t.candidate, precision="auto"): t.rung for t in timed
               if t.candidate.precision == "auto"}
    useful = [t for t in timed if t.candidate.precision == "auto"
              or t.rung > default[replace(t.candidate, precision="auto")]]
    return [t for t in useful if t.final_epochs >= MIN_EPOCHS] or timed[:1]


def anchors(fp: Fingerprint, fits: list[Timed]) -> list[Config]:
    """The configurations tried first, in this order, which is also the order ties are
    broken in: the rules' choice (the costliest candidate that fits, with the hand
    recipes' settings), ResNet-18 as the MedMNIST v2 paper trains it, and the default
    small CNN."""
    return [recipe_config(fp, fits[-1].candidate), paper_config(fp), default_config(fp)]


def default_config(fp: Fingerprint) -> Config:
    """params.yaml's defaults: the small CNN at the store's side."""
    return Config(Candidate("cnn", fp.image_size), lr=0.003, weight_decay=0.0,
                  balance="none", affine_p=0.0, label_smoothing=0.0, average=False,
                  schedule="onecycle", optimizer="adam", origin="params.yaml's default")


def paper_config(fp: Fingerprint) -> Config:
    """ResNet-18 at the store's side as the MedMNIST v2 paper trains it: Adam at 0.001,
    no augmentation, a decaying rate from the first step (no warm-up); the small stem for
    its 28 px images (up to ``PAPER_SMALL_STEM_MAX``), the standard one for larger
    images, as for its 224 px."""
    return Config(Candidate("resnet18", fp.image_size, fp.image_size <= PAPER_SMALL_STEM_MAX),
                  lr=0.001, weight_decay=0.0, balance="none", affine_p=0.0,
                  label_smoothing=0.0, average=False, schedule="cosine", optimizer="adam",
                  warmup=False, origin="ResNet-18 as the MedMNIST v2 paper trains it")


def recipe_config(fp: Fingerprint, candidate: Candidate) -> Config:
    """``candidate`` with the hand recipes' settings (the CNN with its measured default),
    as the rules chose before any search; candidates are timed with it."""
    cnn = candidate.model == "cnn"
    return Config(candidate, lr=0.003, weight_decay=0.0 if cnn else 0.05,
                  balance=balance(fp)[0], affine_p=affine_p(candidate), label_smoothing=0.0,
                  average=True, schedule="onecycle", optimizer="adam" if cnn else "adamw",
                  origin="rules: the costliest model that fits, the hand recipes' settings")


def decide(fp: Fingerprint, winner: Config, epochs: int, batch: int, device: str,
           why: str, precision_why: str = "") -> dict[str, tuple[object, str]]:
    """Every planned key with its value and reason, for the winning configuration
    trained ``epochs`` epochs (``precision_why``: the reason for its precision)."""
    c = winner.candidate
    steps = epochs * math.ceil(fp.n_train / batch)
    out: dict[str, tuple[object, str]] = {
        "train.model": (c.model, why),
        "prepare.image_size": (c.input_size, "params.yaml's prepare.image_size, the only "
                               "side searched" if fp.side_set else "the side the store is "
                               "prepared at from the source images (median side "
                               f"{fp.native_size} px)"),
        "train.small_input": (c.small_input, "3x3 stride-1 stem" if c.small_input
                              else "standard stem"),
        "train.precision": (c.precision, precision_why or PRECISION_WHY[c.precision]),
        "train.batch_size": (batch, f"{BATCH[device]} on {device}, halved until an epoch "
                             f"has {MIN_STEPS_PER_EPOCH} steps"),
        "train.epochs": (epochs, "what the budget left after the trials fits at the "
                         f"rate's rung, at most {MAX_EPOCHS}"),
        "train.optimizer": (winner.optimizer, why),
        "train.lr": (winner.lr, why),
        "train.weight_decay": (winner.weight_decay, why),
        "train.schedule": (winner.schedule, why),
        "train.warmup_epochs": ((warmup_epochs(epochs, math.ceil(fp.n_train / batch)),
                                 "a fifth of the epochs, at least 2 steps") if winner.warmup
                                else (0.0, f"{why}: no warm-up")),
        "train.balance": (winner.balance, why),
        "train.label_smoothing": (winner.label_smoothing, why),
        "augment.affine_p": (winner.affine_p, why),
    }
    decay = averaging(steps) if winner.average else 0.0
    out["train.ema"] = (decay, f"{why}; averaged over about the last {EMA_HORIZON:.0%} of "
                               f"{steps} steps" if decay else
                        f"{why}: no average" if not winner.average else
                        f"{steps} steps < {EMA_MIN_STEPS}: no average")
    return out


def warmup_epochs(epochs: int, steps_per_epoch: int) -> float:
    """A fifth of the epochs rising (hand recipes: 3 of 12, 6 of 30), at least the two
    steps the one-cycle schedule needs."""
    return round(max(0.2 * epochs, 2 / steps_per_epoch), 2)


def affine_p(c: Candidate) -> float:
    """The augmentation a candidate trains with (and is timed with): rotation, shift and
    zoom with this probability."""
    return 0.0 if c.model == "cnn" else 0.5


def balance(fp: Fingerprint) -> tuple[str, str]:
    """The rules' class balance: a class-weighted loss below the ``IMBALANCED`` ratio."""
    ratio = fp.balance_ratio
    if ratio < IMBALANCED:
        return "loss", f"class ratio {ratio:.2f} < {IMBALANCED}: class-weighted loss"
    return "none", f"class ratio {ratio:.2f} >= {IMBALANCED}"


def averaging(steps: int) -> float:
    """The weight average's decay for a run of ``steps`` steps: over about the last
    ``EMA_HORIZON`` of them; none under ``EMA_MIN_STEPS``."""
    if steps < EMA_MIN_STEPS:
        return 0.0
    return min(0.999, round(1 - 1 / (EMA_HORIZON * steps), 3))
