"""A faster weight gradient for convolutions with tiny outputs, on the CPU.

PyTorch's CPU convolutions run on oneDNN, whose weight-gradient kernel is slow when the
output has very few pixels: in a ResNet at 48-64 px the last stage works on 2x2 maps,
and there the weight gradient of a 512 -> 512 3x3 convolution took 77-82 ms per batch of
64 on this project's CPU, against 15 ms for its forward pass (docs/benchmarks.md). The same
gradient is one matrix product of the output gradient with the unfolded input (im2col),
which took 15 ms. At 4x4 outputs the results were mixed and above that oneDNN was
faster, so only outputs of at most ``MAX_PIXELS`` pixels take this path. The input and
bias gradients stay on oneDNN. The results agree with oneDNN's to float32 rounding.

``unfold_weight_grad(model)`` switches it on for the convolutions of ``model`` that
``eligible`` selects (large 3x3 ones) while its ``with`` block runs; the model's
parameters and state dict are untouched.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

MAX_PIXELS = 4  # output height x width at or below which the weight gradient is unfolded
MIN_WEIGHTS = 2**18  # smaller convolutions gain little or lose (docs/benchmarks.md)


class _UnfoldGradConv2d(torch.autograd.Function):
    """conv2d (groups 1, zero padding); backward: input and bias gradients by oneDNN,
    the weight gradient by im2col and one matrix product."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = stride, padding, dilation
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x or need_b:
            grad_x, _, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, stride,
                padding, dilation, False, [0, 0], 1, [need_x, False, need_b])
        if need_w:
            k = weight.shape[0]
            cols = F.unfold(x, weight.shape[2:], dilation, padding, stride)  # (N, C*kh*kw, L)
            g = grad.reshape(grad.shape[0], k, -1)  # (N, K, L)
            grad_w = (g.transpose(0, 1).reshape(k, -1)
                      @ cols.transpose(1, 2).reshape(-1, cols.shape[1])).reshape(weight.shape)
        return grad_x, grad_w, grad_b, None, None, None


def _output_pixels(conv: nn.Conv2d, x: torch.Tensor) -> int:
    pixels = 1
    for size, k, s, p, d in zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.padding,
                                conv.dilation, strict=True):
        pixels *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    return pixels


def _forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if (x.device.type == "cpu" and torch.is_grad_enabled() and self.weight.requires_grad
            and not torch.is_autocast_enabled("cpu") and x.dtype == torch.float32
            and _output_pixels(self, x) <= MAX_PIXELS):
        return _UnfoldGradConv2d.apply(x, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation)
    return type(self).forward(self, x)


def eligible(module: nn.Module) -> bool:
    """A plain convolution (groups 1, zero padding given in pixels, not 'same') with a
    kernel wider than 1x1 and at least ``MIN_WEIGHTS`` weights: where oneDNN's weight
    gradient was slow. 1x1 and depthwise convolutions were as fast or faster on oneDNN."""
    return (type(module) is nn.Conv2d and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and max(module.kernel_size) > 1 and module.weight.numel() >= MIN_WEIGHTS)


@contextlib.contextmanager
def unfold_weight_grad(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, the eligible convolutions of ``model`` compute their weight
    gradient by unfolding when their output has at most ``MAX_PIXELS`` pixels on the
    CPU; yields how many convolutions were switched (0 when not ``enabled``)."""
    convs = [m for m in model.modules() if eligible(m)] if enabled else []
    for conv in convs:
        conv.forward = types.MethodType(_forward, conv)
    try:
        yield len(convs)
    finally:
        for conv in convs:
            del conv.forward
