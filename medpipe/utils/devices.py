"""Device choice (``auto``: CUDA if present, else CPU) and how the device runs a model
(:class:`Speed`: bf16, channels_last, compile), for training and inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medpipe import PipelineError


@dataclass(frozen=True)
class Speed:
    """How the device runs the model: numerics and memory layout, not what it learns."""

    bf16: bool = False  # autocast matmuls and convolutions to bfloat16
    channels_last: bool = False  # NHWC activations (faster convolutions on GPUs and CPUs)
    compile: bool = False  # torch.compile the model
    unfold_grad: bool = False  # CPU: weight gradients of tiny-output convs by im2col (cpuconv)

    @classmethod
    def resolve(cls, cfg, device: torch.device) -> Speed:
        """``auto`` means: bf16 on CUDA where the GPU supports it, fp32 on a CPU;
        channels_last on both (on this project's CPU it was 1.0-1.7x faster for every
        model measured; docs/benchmarks.md). On a CPU in fp32 without torch.compile, the
        convolutions ``cpuconv`` selects compute their weight gradient by unfolding."""
        cuda = device.type == "cuda"
        bf16 = cfg.precision == "bf16" or (
            cfg.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
        channels_last = cfg.channels_last is True or (
            cfg.channels_last == "auto" and device.type in ("cuda", "cpu"))
        unfold_grad = device.type == "cpu" and not bf16 and not cfg.compile
        return cls(bf16=bf16, channels_last=channels_last, compile=cfg.compile,
                   unfold_grad=unfold_grad)

    def autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.bf16)


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 itself (AVX-512 with BF16, AMX), as oneDNN, which
    runs the CPU's bf16 convolutions, reports it; without, autocast only emulates bf16."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; an unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PipelineError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device '{name}' requested but CUDA is not available here")
    return device
