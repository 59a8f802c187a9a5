"""The rules that turn a fingerprint and measured step rates into a configuration.

Each constant names the measurement it comes from; the table of what was tried and what
won is in docs/planning.md. The rules read the rates only through their rungs
(:func:`~medpipe.planning.rates.rung`), so a plan does not move with timing noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from medpipe import PipelineError
from medpipe.planning.fingerprint import Fingerprint
from medpipe.planning.rates import Candidate, rung

# Fewest epochs a model is chosen for. PneumoniaMNIST, ResNet-18 at 48 px: 10, 11 and 12
# epochs scored within the spread of seeds; 3 epochs at 28 px lost 0.013 AUC.
MIN_EPOCHS = 10
MAX_EPOCHS = 30  # the default run's 30; its best epoch was 16, and longer runs gained nothing
USABLE = 0.85  # share of the budget planned as training steps; the rest builds and validates
VAL_COST = 0.35  # one image validated costs about a third of one trained (forward only)
# Input side: at most twice the store's or the native side, whichever is smaller (48 px
# from 28 px beat 64 px), at least 32 for a stride-32 network, at most 224 px.
SIDES = (32, 48, 64, 96, 128, 160, 224)
MAX_UPSAMPLE = 2
SMALL_STEM_MAX = 64  # the small stem keeps full resolution: only for stores up to 64 px
# Relative cost per pixel the stem keeps; the candidates are timed cheapest first.
COST = {"cnn": 0.05, "resnet18": 1.0, "resnet50": 2.3}
BATCH = {"cpu": 64, "cuda": 128}  # on the CPU, batch 128 did not shorten a run
MIN_STEPS_PER_EPOCH = 8  # a smaller split halves the batch, down to MIN_BATCH
MIN_BATCH = 8
IMBALANCED = 0.5  # a class-weighted loss below this smallest/largest class ratio
EMA_HORIZON = 0.1  # weights averaged over about the last tenth of the steps
EMA_MIN_STEPS = 100  # fewer steps: no average


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    images_per_second: float  # measured
    rung: float  # what the rules read
    epochs: int  # that fit the budget at the rung


@dataclass
class Plan:
    budget_minutes: float
    device: str
    batch_size: int
    trials: list[Trial]
    chosen: Trial
    choices: dict[str, tuple[object, str]] = field(default_factory=dict)  # key: value, why


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


def candidates(fp: Fingerprint, device: str) -> list[Candidate]:
    """The models the plan may choose, cheapest first."""
    s = fp.image_size
    top = min(SIDES[-1], MAX_UPSAMPLE * min(s, fp.native_size))
    sides = sorted({side for side in (*SIDES, s) if SIDES[0] <= side <= top
                    and side >= s // 2})
    models = ["resnet18", "resnet50"] if device == "cuda" else ["resnet18"]
    out = [Candidate("cnn", s)]
    out += [Candidate(m, side) for m in models for side in sides]
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


def epochs_in(fp: Fingerprint, rate: float, seconds: float) -> int:
    """Epochs of training and validation that fit ``seconds`` at ``rate`` images/s."""
    per_epoch = (fp.n_train + VAL_COST * fp.images["val"]) / max(rate, 1e-9)
    return min(MAX_EPOCHS, math.floor(seconds / per_epoch))


def choose(fp: Fingerprint, device: str, budget_minutes: float,
           measure: Callable[[Candidate, int], float]) -> Plan:
    """Time the candidates cheapest first (``measure(candidate, batch)`` -> images/s)
    until one no longer fits ``MIN_EPOCHS``; choose the costliest that does."""
    batch = batch_size(fp, device)
    seconds = budget_minutes * 60 * USABLE
    trials = []
    for cand in candidates(fp, device):
        rate = measure(cand, batch)
        trials.append(Trial(cand, round(rate, 1), rung(rate), epochs_in(fp, rung(rate),
                                                                        seconds)))
        if trials[-1].epochs < MIN_EPOCHS:
            break
    fits = [t for t in trials if t.epochs >= MIN_EPOCHS]
    chosen = fits[-1] if fits else trials[0]
    if chosen.epochs < 1:
        per_epoch = (fp.n_train + VAL_COST * fp.images["val"]) / max(chosen.rung, 1e-9)
        need = math.ceil(per_epoch / 60 / USABLE * 100) / 100
        raise PipelineError(
            f"params.yaml: 'plan.budget_minutes' {budget_minutes} is too small: one epoch "
            f"of the cheapest model ({chosen.candidate.name}, {fp.n_train} training images "
            f"at about {chosen.rung:.0f} images/s on {device}) needs "
            f"{per_epoch / 60:.2f} minutes; set at least {need} (stage plan)")
    why = (f"the costliest candidate that fits {MIN_EPOCHS} epochs in the budget"
           if fits else f"no candidate fits {MIN_EPOCHS} epochs: the cheapest, for the "
           "most epochs")
    plan = Plan(budget_minutes, device, batch, trials, chosen)
    plan.choices = decide(fp, plan, why)
    return plan


def decide(fp: Fingerprint, plan: Plan, why: str) -> dict[str, tuple[object, str]]:
    """Every planned key with its value and reason, given the chosen candidate."""
    c, epochs, batch = plan.chosen.candidate, plan.chosen.epochs, plan.batch_size
    steps = epochs * math.ceil(fp.n_train / batch)
    cnn = c.model == "cnn"
    out: dict[str, tuple[object, str]] = {
        "train.model": (c.model, f"{why} ({plan.chosen.rung:.0f} images/s rung on "
                                 f"{plan.device})"),
        "prepare.image_size": (c.input_size, "the side the model sees (the store's "
                               f"{fp.image_size} px images resized to it, before the "
                               "augmentation in training)"),
        "train.small_input": (c.small_input, "3x3 stride-1 stem for a store of at most "
                              f"{SMALL_STEM_MAX} px" if c.small_input else "standard stem"),
        "train.batch_size": (batch, f"{BATCH[plan.device]} on {plan.device}, halved until "
                             f"an epoch has {MIN_STEPS_PER_EPOCH} steps"),
        "train.epochs": (epochs, f"what fits {USABLE:.0%} of {plan.budget_minutes} min at "
                         f"the rung, at most {MAX_EPOCHS}"),
        "train.optimizer": ("adam" if cnn else "adamw", "as the measured default (cnn) "
                            "and hand recipes (ResNet)"),
        "train.weight_decay": (0.0 if cnn else 0.05, "as the optimiser's measured runs"),
        "train.lr": (0.003, "peak of the one-cycle schedule in every measured run"),
        "train.schedule": ("onecycle", "every measured run"),
        "train.warmup_epochs": (max(1, round(0.2 * epochs)) if epochs >= 5 else 0.5,
                                "a fifth of the epochs (hand recipes: 3 of 12, 6 of 30)"),
    }
    out.update(_balance(fp))
    out.update(_averaging(steps))
    out["augment.affine_p"] = (affine_p(c), "the CNN's measured default has none" if cnn
                               else "rotation, shift and zoom: both hand recipes; flips "
                                    "and intensity changes lost in benchmarks.md")
    return out


def affine_p(c: Candidate) -> float:
    """The augmentation a candidate trains with (and is timed with): rotation, shift and
    zoom with this probability."""
    return 0.0 if c.model == "cnn" else 0.5


def _balance(fp: Fingerprint) -> dict[str, tuple[object, str]]:
    ratio = fp.balance_ratio
    if ratio < IMBALANCED:
        return {"train.balance": ("loss", f"class ratio {ratio:.2f} < {IMBALANCED}: "
                                          "class-weighted loss")}
    return {"train.balance": ("none", f"class ratio {ratio:.2f} >= {IMBALANCED}")}


def _averaging(steps: int) -> dict[str, tuple[object, str]]:
    if steps < EMA_MIN_STEPS:
        return {"train.ema": (0.0, f"{steps} steps < {EMA_MIN_STEPS}: no average")}
    decay = min(0.999, round(1 - 1 / (EMA_HORIZON * steps), 3))
    return {"train.ema": (decay, f"averaged over about the last {EMA_HORIZON:.0%} of "
                                 f"{steps} steps")}
