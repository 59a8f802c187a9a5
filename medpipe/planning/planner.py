"""The plan: fingerprint the store, time the candidates on the device, apply the rules.

Without DVC, as a GPU machine or a benchmark runs it::

    from medpipe.planning.planner import make_plan
    sections, report = make_plan(Path("data/prepared"), None, 10.0, torch.device("cpu"))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from medpipe.data import store
from medpipe.params.sections import AugmentParams
from medpipe.planning import fingerprint, rates, rules
from medpipe.planning.ratebook import RateBook
from medpipe.task import from_meta

log = logging.getLogger(__name__)


def make_plan(data_dir: Path, raw_dir: Path | None, budget_minutes: float,
              device: torch.device, timed_steps: int = 10,
              rate_book: Path | None = None) -> tuple[dict, dict]:
    """(the recipe sections, the report for metrics/plan.json) of a plan for the store
    at ``data_dir`` within ``budget_minutes`` of training on ``device``. ``rate_book``:
    the rates of candidates timed before on this device (read, and added to); None:
    time every candidate (medpipe.planning.ratebook)."""
    start = time.perf_counter()
    timed = time_and_choose(data_dir, raw_dir, budget_minutes, device, timed_steps, rate_book)
    plan = timed.plan
    report = {
        "planned": True, "budget_minutes": budget_minutes, "device": device.type,
        "device_key": timed.device_key,
        "rate_book": str(rate_book) if rate_book is not None else None,
        "fingerprint": timed.fingerprint.as_dict(),
        "candidates": [{"name": t.candidate.name, "images_per_second": t.images_per_second,
                        "rung": t.rung, "epochs_in_budget": t.epochs,
                        "rate_from": timed.rate_from[t.candidate.name]} for t in plan.trials],
        "chosen": plan.chosen.candidate.name,
        "choices": {key: {"value": value, "reason": why}
                    for key, (value, why) in plan.choices.items()},
        "plan_seconds": round(time.perf_counter() - start, 2),
    }
    return sections_of(plan.choices), report


@dataclass
class Timed:
    """A plan with what it was made from."""

    fingerprint: fingerprint.Fingerprint
    plan: rules.Plan
    rate_from: dict[str, str]  # candidate name: "timed" | "rate book"
    device_key: str


def time_and_choose(data_dir: Path, raw_dir: Path | None, budget_minutes: float,
                    device: torch.device, timed_steps: int = 10,
                    rate_book: Path | None = None) -> Timed:
    """Fingerprint the store, time its candidates (or read their rates from the book)
    and apply the rules (see :func:`make_plan`)."""
    fp = fingerprint.read(data_dir, raw_dir)
    rules.check_trainable(fp, str(data_dir))
    stats = store.read_stats(data_dir)
    train = store.load_split(data_dir, "train")
    task = from_meta(stats, str(data_dir / store.STATS))

    book = RateBook(rate_book, device)
    sources: dict[str, str] = {}

    def measure(candidate: rates.Candidate, batch: int) -> float:
        augment = AugmentParams(affine_p=rules.affine_p(candidate))
        rate, booked = book.rate(candidate, batch, stats, lambda: rates.measure(
            candidate, stats, train, task, device, batch, timed_steps, augment,
            average=True))
        sources[candidate.name] = "rate book" if booked else "timed"
        log.info("%s: %.1f images/s (rung %.1f), %s", candidate.name, rate,
                 rates.rung(rate), sources[candidate.name])
        return rate

    plan = rules.choose(fp, device.type, budget_minutes, measure)
    return Timed(fp, plan, sources, book.device)


def sections_of(choices: dict[str, tuple[object, str]]) -> dict[str, dict]:
    """The recipe's sections of planned ``{"section.key": (value, reason)}`` choices."""
    sections: dict[str, dict] = {}
    for key, (value, _) in choices.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return sections
