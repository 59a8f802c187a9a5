"""Grad-CAM heat maps: which part of the image drove a logit.

Grad-CAM (Selvaraju et al., 2017) weights each channel of a convolutional layer's output
by the mean gradient of the explained logit over that channel, sums, keeps the positive
part and upsamples to the input size. The layer for each architecture is
:data:`medpipe.models.architectures.TARGET_LAYERS` (the last convolutional block).
Hand-written with a forward hook and ``torch.autograd.grad``: no backward hooks, so the
in-place ReLUs of DenseNet and MobileNet cannot corrupt what is read.

The evaluate stage draws a seeded sample of test cases, half of them predicted right and
half wrong (as far as there are), and writes one PNG per case: the image and the heat map
over it, with the true and predicted class and the probability in the title and the name.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medpipe.models.architectures import target_layer
from medpipe.utils.progress import track

log = logging.getLogger(__name__)

VIEW_SIDE = 256  # small images are enlarged to at least this many px to be readable


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module
             ) -> torch.Tensor:
    """Heat maps ``(B, H, W)`` in [0, 1] for logit ``target[b]`` of image ``x[b]``.

    ``x`` is ``(B, C, H, W)`` as the model takes it; ``layer`` is a module inside
    ``model`` whose output is a ``(B, K, h, w)`` feature map. Each map is scaled so its
    maximum is 1 (all zeros when no location has positive evidence)."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        # Return a copy: an in-place op after the layer (DenseNet's F.relu(inplace=True))
        # then changes the copy, not the activations whose gradient is taken below.
        return output.clone()

    model.eval()
    handle = layer.register_forward_hook(keep)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            # Gradients flow even through a frozen backbone (requires_grad False).
            x = x.detach().clone().requires_grad_(True)
            logits = model(x)
            score = logits.float().gather(1, target.view(-1, 1).to(logits.device)).sum()
            (acts,) = captured
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
    weights = grads.float().mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    cam = F.relu((weights * acts.detach().float()).sum(1, keepdim=True))  # (B, 1, h, w)
    if cam.shape[-2:] == (1, 1):
        log.warning("Grad-CAM: the target layer is 1x1 at %dx%d px, so the heat map shows no "
                    "location; use larger images or train.small_input: true",
                    x.shape[-2], x.shape[-1])
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    # Scale by the peak, however small: an untrained net's maps can be ~1e-14.
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 0, cam / peak.clamp(min=torch.finfo(cam.dtype).tiny), 0.0)


@dataclass(frozen=True)
class Case:
    """One image to explain: its index in the split and what the file name says."""

    index: int  # row in the split
    target: int  # the logit explained
    correct: bool
    label: str  # e.g. "synthetic-000007_true-opacity_pred-normal_p0.312"
    title: str  # drawn above the image


def pick(correct: np.ndarray, n: int, seed: int) -> list[int]:
    """``n`` indices drawn with ``seed``: half from the wrong cases (as many as exist),
    the rest from the right ones; right ones first, each group in index order."""
    correct = np.asarray(correct, dtype=bool)
    right, wrong = np.flatnonzero(correct), np.flatnonzero(~correct)
    n = min(n, len(correct))
    n_wrong = min(len(wrong), max(n // 2, n - len(right)))
    rng = np.random.default_rng(seed)
    chosen_wrong = np.sort(rng.choice(wrong, n_wrong, replace=False))
    chosen_right = np.sort(rng.choice(right, n - n_wrong, replace=False))
    return [int(i) for i in np.concatenate([chosen_right, chosen_wrong])]


def single_label_cases(labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray,
                       classes: list[str], ids: list[str], n: int, seed: int, *,
                       positive: int | None) -> list[Case]:
    """Cases of a single-label task. The explained logit is the ``positive`` class's when
    there is one (where is the finding? a map of "normal", the absence of a finding, is
    mostly empty), else the predicted class's. ``p`` is the predicted class's probability."""
    cases = []
    for i in pick(predicted == labels, n, seed):
        true, pred = classes[labels[i]], classes[predicted[i]]
        target = positive if positive is not None else int(predicted[i])
        p = float(probs[i, predicted[i]])
        ok = bool(predicted[i] == labels[i])
        cases.append(Case(i, target, ok, f"{ids[i]}_true-{true}_pred-{pred}_p{p:.3f}",
                          f"{ids[i]}  true {true}  predicted {pred}  p={p:.3f}  "
                          f"(map of {classes[target]})"))
    return cases


def multilabel_cases(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                     classes: list[str], ids: list[str], n: int, seed: int) -> list[Case]:
    """Cases of a multi-label task: (image, finding) pairs where the finding is present or
    called (true positives right; misses and false alarms wrong); the explained logit is
    that finding's."""
    called = probs >= thresholds[None, :]
    present = labels.astype(bool)
    rows, cols = np.nonzero(present | called)
    cases = []
    for j in pick(present[rows, cols] == called[rows, cols], n, seed):
        i, k = int(rows[j]), int(cols[j])
        true = "present" if present[i, k] else "absent"
        pred = "present" if called[i, k] else "absent"
        p = float(probs[i, k])
        cases.append(Case(i, k, true == pred,
                          f"{ids[i]}_{classes[k]}_true-{true}_pred-{pred}_p{p:.3f}",
                          f"{ids[i]}  {classes[k]}: true {true}  predicted {pred}  p={p:.3f}"))
    return cases


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB, blue (low) through green and yellow to red (high)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def render(image: np.ndarray, cam: np.ndarray, title: str, alpha: float = 0.45):
    """A PIL image: the input (left) and the heat map over it (right), titled.

    ``image`` is uint8 ``(C, S, S)`` as stored, ``cam`` float ``(S, S)`` in [0, 1]."""
    from PIL import Image, ImageDraw

    base = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    base = base.transpose(1, 2, 0).astype(np.float64)  # (S, S, 3)
    mixed = ((1 - alpha) * base + alpha * colormap(cam)).round()
    side = image.shape[-1]
    scale = max(1, math.ceil(VIEW_SIDE / side))
    size = (side * scale, side * scale)
    left = Image.fromarray(base.round().astype(np.uint8)).resize(size, Image.BILINEAR)
    right = Image.fromarray(mixed.astype(np.uint8)).resize(size, Image.BILINEAR)
    strip = 22
    canvas = Image.new("RGB", (2 * size[0] + 4, size[1] + strip), "white")
    canvas.paste(left, (0, strip))
    canvas.paste(right, (size[0] + 4, strip))
    ImageDraw.Draw(canvas).text((4, 4), title, fill="black")
    return canvas


def safe_name(text: str) -> str:
    """A file name part with only letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def write_maps(model: nn.Module, arch_name: str, images: np.ndarray, cases: list[Case],
               out_dir: Path, device: torch.device, batch_size: int = 16) -> list[Path]:
    """Compute the heat maps of ``cases`` (rows of the uint8 ``images``) and write one
    PNG per case into the existing directory ``out_dir``; return the paths."""
    layer = target_layer(model, arch_name)
    paths = []
    for start in track(range(0, len(cases), batch_size), "evaluate: Grad-CAM", unit="batch"):
        chunk = cases[start : start + batch_size]
        pixels = np.stack([np.asarray(images[c.index]) for c in chunk])
        x = torch.from_numpy(pixels).to(device).float().div_(255.0)
        target = torch.tensor([c.target for c in chunk], device=device)
        maps = grad_cam(model, x, target, layer).cpu().numpy()
        for k, (case, cam) in enumerate(zip(chunk, maps, strict=True)):
            verdict = "correct" if case.correct else "wrong"
            path = out_dir / safe_name(f"{start + k:02d}_{verdict}_{case.label}.png")
            render(pixels[k], cam, f"{verdict}: {case.title}").save(path, format="PNG")
            paths.append(path)
    return paths
