"""Progress of a long step, readable both on a terminal and in a log file.

On a terminal (stderr a tty) a tqdm bar with the elapsed time, the estimated time left
(ETA) and the rate; log lines printed meanwhile appear above the bar. Elsewhere (a log
file, ``dvc queue logs``, CI) a log line every ``MEDPIPE_PROGRESS_SECONDS`` seconds
(default 30) and one when the step ends, each with the logging set-up's timestamp::

    2026-12-07 10:53:38 [train] train: epoch 3/30, 1200/3000 batch (40%), elapsed 1:02, ETA 1:33

Usage::

    for x in track(items, "prepare: decoding", unit="image"):
        ...
    with Tracker(total, "train", unit="batch") as bar:
        bar.set_detail("epoch 3/30")
        bar.update()
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("medpipe.progress")

T = TypeVar("T")
ENV_SECONDS = "MEDPIPE_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0


def clock_text(seconds: float) -> str:
    """``1:02``, ``1:02:03``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def interval_seconds() -> float:
    """Seconds between two log lines: ``MEDPIPE_PROGRESS_SECONDS``, else 30."""
    text = os.environ.get(ENV_SECONDS, "")
    try:
        value = float(text) if text else DEFAULT_SECONDS
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %g", ENV_SECONDS, text,
                    DEFAULT_SECONDS)
        return DEFAULT_SECONDS
    return value if value > 0 else DEFAULT_SECONDS


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Tracker:
    """``total`` steps of the work ``desc`` (``None``: unknown); ``initial`` already done
    (a resumed run). ``stream``: where a bar goes (default stderr), and whether there is
    a terminal; ``bar``: True or False forces the bar on or off; ``every``: seconds
    between log lines (default :func:`interval_seconds`); ``log_lines``: False for an
    inner bar whose outer one reports to the log; ``leave``: keep the bar on the terminal
    once done; ``unit_scale``: sizes in K, M, G (of 1024 for bytes). ``clock``: for
    tests."""

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", initial: int = 0,
                 stream: TextIO | None = None, bar: bool | None = None,
                 every: float | None = None,
                 log_lines: bool = True, leave: bool = True, unit_scale: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.detail, self._scale = "", unit_scale
        self._clock, self._every = clock, interval_seconds() if every is None else every
        self._log = log_lines
        self._start = self._last = clock()
        self._initial, self._lines = initial, 0
        self._redirect: contextlib.ExitStack | None = None
        self.bar: tqdm | None = None
        stream = sys.stderr if stream is None else stream
        if bar or (bar is None and is_terminal(stream)):
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())
            self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream,
                            leave=leave, dynamic_ncols=True, mininterval=0.5,
                            unit_scale=unit_scale,
                            unit_divisor=1024 if unit == "B" else 1000)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self._log and self._clock() - self._last >= self._every:
            self._emit()

    def set_detail(self, detail: str) -> None:
        """What the step is at, e.g. ``epoch 3/30`` (the bar's description, the log
        line's first words)."""
        self.detail = detail
        if self.bar is not None:
            self.bar.set_description(f"{self.desc}: {detail}" if detail else self.desc)

    def line(self) -> str:
        """``train: epoch 3/30, 1200/3000 batch (40%), elapsed 1:02, ETA 1:33``."""
        head = f"{self.desc}: {self.detail}, " if self.detail else f"{self.desc}: "
        n = self._number(self.n)
        if not self.total:
            return f"{head}{n} {self.unit}, {self.times()}"
        return (f"{head}{n}/{self._number(self.total)} {self.unit} "
                f"({100 * self.n / self.total:.0f}%), {self.times()}")

    def times(self) -> str:
        """``elapsed 1:02, ETA 1:33`` (the ETA at this run's rate; none without a
        total)."""
        elapsed = self._clock() - self._start
        if not self.total:
            return f"elapsed {clock_text(elapsed)}"
        done = self.n - self._initial  # a resumed run's rate counts its own work only
        left = (self.total - self.n) * elapsed / done if done > 0 else math.inf
        return f"elapsed {clock_text(elapsed)}, ETA {clock_text(left)}"

    def _number(self, n: int) -> str:
        if not self._scale:
            return str(n)
        return tqdm.format_sizeof(n, divisor=1024 if self.unit == "B" else 1000)

    def _emit(self) -> None:
        self._last = self._clock()
        self._lines += 1
        log.info("%s", self.line())

    def close(self) -> None:
        """Close the bar; in a log, a last line if any came before (a short step stays
        silent)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self._log and self._lines:
            self._emit()
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
          **kwargs) -> Iterator[T]:
    """Every item of ``items``, one step each, with a :class:`Tracker` (``total``:
    ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Tracker(total, desc, unit=unit, **kwargs) as bar:
        for item in items:
            yield item
            bar.update()
