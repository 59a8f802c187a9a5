"""The rate book: step rates measured on this machine, kept for the plans that follow.

A step rate on a shared machine moves by 10-15% from run to run and by more under load,
enough now and then to move a plan by one candidate. So the plan times a candidate once
per device and writes the rate down; a later plan on the same device reads it from the
book instead of timing again, and two plans of one store on one device are the same plan.

The book is a JSON file (``plan.rate_book``; ``cache``, the default, is
``step_rates.json`` in the user's cache folder, so every project on the machine shares
it). An entry is keyed by the device (kind, the CPU's model name and the threads torch
uses, or the GPU's name), the torch version, and what sets a step's cost: the candidate,
the batch, the store's side and channels, and what a timed step holds (``STEP``: a book
timed with another kind of step is not read). Delete the file, or point ``plan.rate_book``
elsewhere, to time again; ``null`` times every plan.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from medpipe import PipelineError
from medpipe.planning.rates import Candidate
from medpipe.utils.files import write_json

log = logging.getLogger(__name__)
IN_CACHE = "cache"  # plan.rate_book's default: the user's cache folder
STEP = "augmented, averaged"  # what a timed step holds besides the model's own work


def book_path(value: str | None) -> Path | None:
    """The file ``plan.rate_book`` names: ``cache`` is
    ``$XDG_CACHE_HOME/medpipe/step_rates.json`` (else under ``~/.cache``); None: no book."""
    if value is None:
        return None
    if value == IN_CACHE:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "medpipe" / "step_rates.json"
    return Path(value).expanduser()


def device_key(device: torch.device) -> str:
    """The device as the book names it: kind, model and the threads torch uses."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{_cpu_model()}, {torch.get_num_threads()} threads"
    return f"{device.type}: {name}; torch {torch.__version__}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def entry_key(candidate: Candidate, batch: int, stats: dict) -> str:
    return (f"{candidate.name}, batch {batch}, store {stats['image_size']} px "
            f"x {stats['channels']} ch; step {STEP}")


class RateBook:
    """Rates read from and written to ``path`` (None: no book, every rate is timed)."""

    def __init__(self, path: Path | None, device: torch.device):
        self.path = path
        self.device = device_key(device)
        self.entries: dict[str, float] = {}
        if path is not None and path.exists():
            self.entries = self._read(path).get(self.device, {})

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            book = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PipelineError(f"{path}: not a rate book ({e}); delete it to time the "
                                "candidates again ('plan.rate_book')") from None
        if not isinstance(book, dict) or not all(isinstance(v, dict) for v in book.values()):
            raise PipelineError(f"{path}: not a rate book (expected a device -> rates "
                                "mapping); delete it to time the candidates again")
        return book

    def rate(self, candidate: Candidate, batch: int, stats: dict,
             timer: Callable[[], float]) -> tuple[float, bool]:
        """(images/s of ``candidate``, whether it was read from the book): the book's
        entry, or ``timer()`` written into the book."""
        key = entry_key(candidate, batch, stats)
        if key in self.entries:
            return self.entries[key], True
        rate = round(float(timer()), 1)
        self.entries[key] = rate
        if self.path is not None:
            book = self._read(self.path) if self.path.exists() else {}
            book.setdefault(self.device, {})[key] = rate
            write_json(self.path, book)
        return rate, False
