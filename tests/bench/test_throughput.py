"""Pieces of bench/throughput.py that its figures rest on."""

from __future__ import annotations

import pytest
import torch

from bench import throughput
from medpipe.utils import devices


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
    assert speed == devices.Speed(bf16=False, channels_last=True, compile=False,
                                 unfold_grad=True)


def test_train_flops_counts_forward_and_backward_per_image() -> None:
    """A convolution and a linear layer, counted by hand: the forward of both, both
    weight gradients, the linear layer's input gradient, and no input gradient for the
    first layer (the images need none)."""
    torch.manual_seed(0)
    batch, c_in, c_out, k, size, classes = 4, 1, 8, 3, 10, 2
    model = torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, k, padding=1),
                                torch.nn.Flatten(),
                                torch.nn.Linear(c_out * size * size, classes))
    x = torch.rand(batch, c_in, size, size)
    y = torch.randint(0, classes, (batch,))
    conv = 2 * c_out * c_in * k * k * size * size  # one pass, per image
    linear = 2 * c_out * size * size * classes
    expected = 2 * conv + 3 * linear  # conv: forward, weight grad; linear: all three
    assert throughput.train_flops(model, x, y) == expected
    assert all(p.grad is None for p in model.parameters())  # the count leaves no gradients
