"""Pixel conversion shared by the prepare stage and prediction: channels, antialiased
resize, quantisation to the store's 8 bits. One implementation, so the pixels a model
sees when it predicts are computed as in training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medpipe import PipelineError


def to_tensor_batch(images: np.ndarray, channels: int) -> torch.Tensor:
    """uint8/uint16 (B, H, W) or (B, H, W, C) -> float32 (B, channels, H, W) in [0, 1]."""
    arr = np.asarray(images)
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    x = torch.from_numpy(arr.astype(np.float32)) / scale
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4:
        x = x.permute(0, 3, 1, 2)
    else:
        raise PipelineError(f"images must be 2-D (grey) or 3-D (colour), got shape {arr.shape}")
    have = x.shape[1]
    if have == 4:  # RGBA: drop alpha
        x, have = x[:, :3], 3
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:  # ITU-R BT.601 luma
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise PipelineError(f"cannot convert {have}-channel images to {channels} channels")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a float batch to ``size`` x ``size``."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_store_pixels(images: np.ndarray, channels: int, size: int) -> torch.Tensor:
    """Raw images -> what the store holds and the model is trained on: uint8
    ``(B, channels, size, size)``. Prediction calls this too, so that a new image is
    prepared exactly as the training images were."""
    return quantize(resize(to_tensor_batch(images, channels), size))


def resize_store_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """The store's uint8 ``(B, C, S, S)`` images resized to ``size``, as the store would
    hold them at that side: the plan's trials at a side below the one it decoded."""
    x = torch.from_numpy(np.array(images)).to(torch.float32) / 255.0  # a copy: maps are read-only
    return quantize(resize(x, size))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] -> the store's 8 bits, rounded. Not in place: without a
    resize, a grey image made RGB is still an expanded view whose three channels share
    one memory location."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
