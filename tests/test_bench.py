"""Pieces of bench/throughput.py that its figures rest on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import throughput  # noqa: E402

from medpipe import engine  # noqa: E402


@pytest.mark.parametrize(("intervals", "length"), [
    ([], 0.0),
    ([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)], 4.0),  # overlap counted once, gap not at all
    ([(0.0, 10.0), (2.0, 3.0)], 10.0),  # nested (a kernel on a second stream)
    ([(5.0, 6.0), (0.0, 1.0), (1.0, 2.0)], 3.0),  # unsorted, touching
])
def test_gpu_busy_counts_the_union_of_kernel_intervals(intervals, length) -> None:
    assert throughput.covered(intervals) == pytest.approx(length)


def test_ours_is_timed_with_the_train_stage_speed_settings() -> None:
    """The committed params (channels_last: auto) give NHWC fp32 on a CPU, with the
    unfolded weight gradients."""
    speed = throughput.pipeline_speed(torch.device("cpu"))
    assert speed == engine.Speed(bf16=False, channels_last=True, compile=False,
                                 unfold_grad=True)
