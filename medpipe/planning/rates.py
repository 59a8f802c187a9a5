"""Measured step rates: real training steps of a candidate model on the device.

On a CPU with bf16 arithmetic (:func:`medpipe.utils.devices.cpu_bf16`), each candidate is
timed in fp32 and with bf16 autocast; the model trains in bf16 where that is a rung
faster (its validation passes score in fp32, as the evaluate stage does).

A candidate is timed with the training loop's own step
(:func:`medpipe.training.loop.fastest_step`: the same builder, speed settings, batches,
augmentation, optimiser, loss and weight average as a trial and the train stage), on
the store's own images. Rates are noisy, so the plan reads them on a ladder of rungs a
factor sqrt(2) apart (:func:`rung`): within a rung, a rerun on the same device kind gives
the same plan. Within one model and stem a larger side cannot be faster than a smaller
one; a rate timed so (a step slowed by other work) is lowered to the smaller side's
(:func:`monotone`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from medpipe.data.store import Split
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.training import loop, run
from medpipe.training.distributed import DistInfo
from medpipe.utils.seeding import seed_everything

RUNGS_PER_DOUBLING = 2  # the ladder: rates 2 ** (k / 2) images/s
WARMUP = 2  # untimed steps first: the CPU's first steps of a new shape are slower


@dataclass(frozen=True)
class Candidate:
    """A model the plan may choose: architecture, the side it sees, its stem, and its
    precision (``train.precision``: ``auto``, the device's default, or ``bf16``)."""

    model: str
    input_size: int
    small_input: bool = False
    precision: str = "auto"

    @property
    def name(self) -> str:
        return (f"{self.model}{' small stem' if self.small_input else ''}"
                f"{' bf16' if self.precision == 'bf16' else ''} at {self.input_size} px")


def rung(rate: float) -> float:
    """``rate`` rounded to the nearest rung (geometrically) of the ladder
    2 ** (k / RUNGS_PER_DOUBLING): within 19% of the rate either way."""
    if rate <= 0:
        return 0.0
    k = round(math.log2(rate) * RUNGS_PER_DOUBLING)
    return 2.0 ** (k / RUNGS_PER_DOUBLING)


def monotone(rates: dict[Candidate, float]) -> dict[Candidate, float]:
    """``rates`` with each candidate's rate at most that of the same model and stem at
    a smaller side: more pixels never train faster, so a higher rate was timed while
    the smaller side's steps were slowed by other work."""
    def kind(c: Candidate) -> tuple:
        return c.model, c.small_input, c.precision

    out = dict(rates)
    for c in sorted(rates, key=lambda c: (*kind(c), c.input_size)):
        smaller = [out[o] for o in out if kind(o) == kind(c) and o.input_size < c.input_size]
        if smaller:
            out[c] = min(out[c], min(smaller))
    return out


def measure(candidate: Candidate, cfg: TrainParams, aug: AugmentParams, stats: dict,
            train: Split, val: Split, data_dir: Path, device: torch.device,
            steps: int) -> float:
    """Images/s of the fastest of ``steps`` training steps of ``candidate`` trained with
    ``cfg`` and ``aug`` (after ``WARMUP`` untimed ones) on ``train``, images at the
    candidate's side."""
    seed_everything(0, True)
    built = run.build(cfg, stats, train, val, data_dir, device, DistInfo())
    seconds = loop.fastest_step(built.model, train, cfg, device, augment=aug,
                                task=built.task, steps=steps, warmup=WARMUP)
    return cfg.batch_size / seconds
