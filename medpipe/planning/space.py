"""The search's space: the configurations the plan may train, in the order it tries them.

The rules' configurations come first (:func:`medpipe.planning.rules.anchors`); a
scrambled Sobol sequence (``scipy.stats.qmc``, seeded) spreads the rest over the models
that fit (model, side and stem) and the hyperparameters below, so that a dozen points
cover each range more evenly than as many random draws.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.stats import qmc

from medpipe.planning.fingerprint import Fingerprint
from medpipe.planning.rates import Candidate
from medpipe.planning.search import Config

SOBOL_POINTS = 32  # points drawn (a power of two, as the Sobol sequence wants)

# The space. The learning rate is drawn log-uniformly, the rest from these choices.
LR = (3e-4, 1e-2)
WEIGHT_DECAY = (0.0, 1e-4, 0.01, 0.05)
BALANCE = ("none", "loss", "sampler")
AFFINE_P = (0.0, 0.25, 0.5, 0.8)  # augmentation strength: rotation, shift and zoom
LABEL_SMOOTHING = (0.0, 0.1)
AVERAGE = (False, True)  # weight averaging (its decay follows the steps: rules.averaging)
SCHEDULE = ("onecycle", "cosine")


def configurations(fp: Fingerprint, fitting: list[Candidate], anchors: list[Config],
                   seed: int = 0) -> list[Config]:
    """The configurations in the order they are tried: ``anchors`` (the rules' choices),
    then Sobol points over the fitting models (model, side and stem) and the
    hyperparameters; duplicates dropped.

    Each model trains in one precision: bf16 where ``fitting`` has a bf16 variant of it
    (the rules keep one only where it is a rung faster), else the device's default. So the
    points drawn do not depend on which precisions a timing found faster."""
    variant = precisions(fitting)
    balance = BALANCE if fp.task != "multilabel" else BALANCE[:2]  # no sampler by finding
    dims = (list(variant), None, WEIGHT_DECAY, balance, AFFINE_P, LABEL_SMOOTHING, AVERAGE,
            SCHEDULE)
    points = qmc.Sobol(d=len(dims), scramble=True, seed=seed).random(SOBOL_POINTS)
    out, seen = [], set()
    drawn = (_config(u, dims) for u in points)
    for config in [*anchors, *drawn]:
        model = variant.get(replace(config.candidate, precision="auto"))
        if model is None:
            continue
        config = replace(config, candidate=model)
        key = replace(config, origin="")
        if key not in seen:
            seen.add(key)
            out.append(config)
    return out


def precisions(fitting: list[Candidate]) -> dict[Candidate, Candidate]:
    """Each fitting model (in the default precision) and the variant it trains as: its
    bf16 one where ``fitting`` holds it; in ``fitting``'s order."""
    variant: dict[Candidate, Candidate] = {}
    for c in fitting:
        base = replace(c, precision="auto")
        if base not in variant or c.precision == "bf16":
            variant[base] = c
    return variant


def _config(u: np.ndarray, dims: tuple) -> Config:
    def pick(k: int):
        choices = dims[k]
        return choices[min(int(u[k] * len(choices)), len(choices) - 1)]

    low, high = LR
    lr = float(f"{math.exp(math.log(low) + u[1] * (math.log(high) - math.log(low))):.2g}")
    return Config(candidate=pick(0), lr=lr, weight_decay=pick(2), balance=pick(3),
                  affine_p=pick(4), label_smoothing=pick(5), average=pick(6),
                  schedule=pick(7))
