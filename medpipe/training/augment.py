"""Random augmentation of whole batches on the training device.

Geometry (rotation, translation, zoom, flips) is folded into one affine matrix per image
and applied with a single ``grid_sample`` call; intensity changes (brightness, contrast,
gamma) and Gaussian noise are per-image tensor arithmetic. Nothing runs per image in
Python, so augmentation costs about the same on a batch of 8 or of 512.

Images are float ``(B, C, H, W)`` in [0, 1] (true intensities, before normalisation), so
gamma and contrast act on what the scanner recorded. Every random draw comes from the
``torch.Generator`` passed in, so a seeded run augments identically every time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medpipe.params.sections import AugmentParams


def is_identity(cfg: AugmentParams) -> bool:
    """True when the params switch every augmentation off."""
    geometric = cfg.affine_p > 0 and (cfg.rotation > 0 or cfg.translate > 0
                                      or tuple(cfg.scale) != (1.0, 1.0))
    intensity = cfg.intensity_p > 0 and (cfg.brightness > 0 or cfg.contrast > 0
                                         or cfg.gamma > 0)
    return not (geometric or cfg.hflip_p > 0 or cfg.vflip_p > 0 or intensity
                or (cfg.noise_p > 0 and cfg.noise_std > 0))


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _chance(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def augment_batch(x: torch.Tensor, cfg: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of ``x`` (float, (B, C, H, W), values in [0, 1])."""
    if is_identity(cfg):
        return x
    b, device = x.shape[0], x.device
    # Every draw is made whatever the probabilities, so changing one probability does not
    # shift the random stream of the others.
    apply_affine = _chance(b, cfg.affine_p, gen, device)
    angle = _uniform(b, -cfg.rotation, cfg.rotation, gen, device) * (math.pi / 180.0)
    zoom = _uniform(b, cfg.scale[0], cfg.scale[1], gen, device)
    shift = _uniform(2 * b, -cfg.translate, cfg.translate, gen, device).view(b, 2) * 2.0
    hflip = _chance(b, cfg.hflip_p, gen, device)
    vflip = _chance(b, cfg.vflip_p, gen, device)
    apply_intensity = _chance(b, cfg.intensity_p, gen, device)
    brightness = _uniform(b, -cfg.brightness, cfg.brightness, gen, device)
    contrast = _uniform(b, 1.0 - cfg.contrast, 1.0 + cfg.contrast, gen, device)
    log_gamma = _uniform(b, -cfg.gamma, cfg.gamma, gen, device)
    apply_noise = _chance(b, cfg.noise_p, gen, device)
    noise_std = _uniform(b, 0.0, cfg.noise_std, gen, device)
    noise = torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype)

    if bool((apply_affine | hflip | vflip).any()):
        angle = torch.where(apply_affine, angle, 0.0)
        zoom = torch.where(apply_affine, zoom, 1.0)
        shift = torch.where(apply_affine[:, None], shift, 0.0)
        # theta maps output coordinates to input ones: zooming in by `zoom` samples a
        # region 1/zoom as large; a flip negates an axis.
        sx = torch.where(hflip, -1.0, 1.0) / zoom
        sy = torch.where(vflip, -1.0, 1.0) / zoom
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos * sx, -sin * sy, shift[:, 0]], dim=1),
                             torch.stack([sin * sx, cos * sy, shift[:, 1]], dim=1)], dim=1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    if bool(apply_intensity.any()):
        keep = ~apply_intensity
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        c = torch.where(keep, 1.0, contrast).view(b, 1, 1, 1)
        shift_b = torch.where(keep, 0.0, brightness).view(b, 1, 1, 1)
        gamma = torch.exp(torch.where(keep, 0.0, log_gamma)).view(b, 1, 1, 1)
        x = ((x - mean) * c + mean + shift_b).clamp(0.0, 1.0) ** gamma

    if bool(apply_noise.any()):
        std = torch.where(apply_noise, noise_std, 0.0).view(b, 1, 1, 1)
        x = (x + noise * std).clamp(0.0, 1.0)
    return x


def preview(images: np.ndarray, cfg: AugmentParams, seed: int, rows: int = 4) -> Image.Image:
    """A grid: the first row holds ``images`` as stored, each further row one random
    augmentation of them. ``images`` is uint8 (N, C, H, W); returns a greyscale or RGB
    PIL image for a quick look at what the params do."""
    x = torch.from_numpy(np.array(images)).float() / 255.0
    gen = torch.Generator().manual_seed(seed)
    grid_rows = [x] + [augment_batch(x, cfg, gen) for _ in range(rows - 1)]
    pad = 2
    n, c, h, w = x.shape
    canvas = torch.ones(c, rows * (h + pad) + pad, n * (w + pad) + pad)
    for r, batch in enumerate(grid_rows):
        for i in range(n):
            top, left = pad + r * (h + pad), pad + i * (w + pad)
            canvas[:, top : top + h, left : left + w] = batch[i]
    arr = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if c == 1 else arr)
