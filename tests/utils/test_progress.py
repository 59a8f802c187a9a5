"""Progress of long steps: a bar with elapsed time and ETA on a terminal, timestamped log
lines every so many seconds elsewhere; `medpipe --version`; predict's default device.
The training loop's lines: tests/training/test_loop.py."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap

import pytest

from medpipe.commands import predict
from medpipe.utils import progress
from medpipe.utils.progress import Tracker, clock_text, track

LOGGER = "medpipe.progress"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 62, 3723, float("inf"), -1)] == [
        "0:00", "1:02", "1:02:03", "?", "?"]


def test_a_log_gets_a_line_every_interval_with_elapsed_and_eta(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level("INFO", logger=LOGGER), \
            Tracker(100, "train", unit="batch", stream=io.StringIO(), every=10,
                    clock=clock) as bar:
        bar.set_detail("epoch 1/5")
        for _ in range(20):  # 20 batches in 5 s: no line yet
            clock.now += 0.25
            bar.update()
        assert lines(caplog) == []
        for _ in range(20):  # 40 batches in 10 s: one line
            clock.now += 0.25
            bar.update()
        bar.set_detail("epoch 3/5")
        clock.now += 20
        bar.update(20)
    assert lines(caplog) == [
        "train: epoch 1/5, 40/100 batch (40%), elapsed 0:10, ETA 0:15",
        "train: epoch 3/5, 60/100 batch (60%), elapsed 0:30, ETA 0:20",
        "train: epoch 3/5, 60/100 batch (60%), elapsed 0:30, ETA 0:20",  # the closing line
    ]


def test_a_resumed_run_estimates_from_its_own_rate(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level("INFO", logger=LOGGER), \
            Tracker(100, "train", unit="batch", initial=50, stream=io.StringIO(), every=10,
                    clock=clock) as bar:
        clock.now += 10
        bar.update(10)
    # 10 batches in 10 s, 40 left: 40 s (not 50 done in 10 s, which would say 8 s)
    assert lines(caplog)[0] == "train: 60/100 batch (60%), elapsed 0:10, ETA 0:40"


def test_a_short_step_and_an_inner_bar_stay_silent_in_a_log(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level("INFO", logger=LOGGER):
        with Tracker(10, "quick", stream=io.StringIO(), every=10, clock=clock) as bar:
            clock.now += 9
            bar.update(10)
        with Tracker(10, "inner", stream=io.StringIO(), every=1, log_lines=False,
                     clock=clock) as bar:
            clock.now += 9
            bar.update(10)
    assert lines(caplog) == []


def test_unknown_total_and_sizes(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level("INFO", logger=LOGGER):
        with Tracker(None, "download", unit="B", unit_scale=True, stream=io.StringIO(),
                     every=1, clock=clock) as bar:
            clock.now += 65
            bar.update(3 * 1024 * 1024)
        with Tracker(4 * 1024 * 1024, "data.bin", unit="B", unit_scale=True,
                     stream=io.StringIO(), every=1, clock=clock) as bar:
            clock.now += 2
            bar.update(1024 * 1024)
    assert lines(caplog)[0] == "download: 3.00M B, elapsed 1:05"
    assert lines(caplog)[2] == "data.bin: 1.00M/4.00M B (25%), elapsed 0:02, ETA 0:06"


def test_a_terminal_gets_a_bar_with_elapsed_and_eta_and_no_log_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    stream = Terminal()
    with caplog.at_level("INFO", logger=LOGGER):
        items = list(track(range(7), "evaluate: Grad-CAM", unit="batch", stream=stream,
                           every=0))
    assert items == list(range(7))
    shown = stream.getvalue()
    assert "evaluate: Grad-CAM" in shown and "100%" in shown and "7/7" in shown
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", shown)  # [elapsed<ETA
    assert lines(caplog) == []


def test_bar_forced_on_or_off() -> None:
    stream = io.StringIO()
    for _ in track(range(3), "forced", stream=stream, bar=True):
        pass
    assert "forced" in stream.getvalue() and "3/3" in stream.getvalue()
    terminal = Terminal()
    for _ in track(range(3), "off", stream=terminal, bar=False):
        pass
    assert terminal.getvalue() == ""


def test_track_yields_every_item_of_a_generator() -> None:
    assert list(track((i * i for i in range(5)), "squares", stream=io.StringIO())) == [
        0, 1, 4, 9, 16]


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(progress.ENV_SECONDS, raising=False)
    assert progress.interval_seconds() == 30
    monkeypatch.setenv(progress.ENV_SECONDS, "2.5")
    assert progress.interval_seconds() == 2.5
    monkeypatch.setenv(progress.ENV_SECONDS, "soon")
    with caplog.at_level("WARNING", logger=LOGGER):
        assert progress.interval_seconds() == 30
    assert "MEDPIPE_PROGRESS_SECONDS='soon' is not a number of seconds" in caplog.text


def test_a_stage_log_carries_timestamped_progress_lines() -> None:
    """A stage's stderr piped to a file (not a terminal): each progress line comes with
    the time of day, as every line of the stage's log."""
    code = textwrap.dedent("""
        import time
        from medpipe.utils import cli
        from medpipe.utils.progress import track

        def main(args):
            for _ in track(range(3), "demo: work", unit="step"):
                time.sleep(0.05)

        cli.run("demo", main, cli.parser("demo"), [])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={"MEDPIPE_PROGRESS_SECONDS": "0.01",
                                           "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    got = out.stderr.splitlines()
    assert len(got) >= 2 and all(re.fullmatch(
        STAMP + r" \[demo\] demo: work: \d/3 step \(\d+%\), elapsed 0:00, ETA 0:00", line)
        for line in got), got
    assert got[-1].endswith("demo: work: 3/3 step (100%), elapsed 0:00, ETA 0:00")


def test_version_prints_the_package_version() -> None:
    import importlib.metadata

    out = subprocess.run([sys.executable, "-m", "medpipe", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert out.stdout.strip() == f"medpipe {importlib.metadata.version('medpipe')}"
    assert re.fullmatch(r"medpipe \d+\.\d+\.\d+\S*", out.stdout.strip())


def test_predict_defaults_to_the_auto_device() -> None:
    args = predict.get_args_parser().parse_args(["images", "--out", "p.csv"])
    assert args.device == "auto"
