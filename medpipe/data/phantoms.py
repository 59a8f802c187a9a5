"""Deterministic generator of chest-radiograph-like images; needs no network.

Each image is a frontal "radiograph": a soft-tissue silhouette, two dark lung fields with
diaphragm domes, the heart shadow and spine, ribs and clavicles crossing the lungs, faint
vessel markings, and acquisition variation (patient position, exposure, gamma, scatter,
quantum noise). Both classes carry look-alike distractors (nipple shadows, rib
crossings), so a model must find the finding, not a shortcut.

Classes (pick a subset, in label order, with ``data.classes``; null: normal, opacity):

- ``normal``   - no finding;
- ``opacity``  - one to three focal opacities (nodules or small consolidations) inside
  the lung fields, of varying size and, above all, contrast: the faint ones are hard;
- ``effusion`` - a pleural effusion: one costophrenic angle filled with fluid density
  and a meniscus, of varying height.

Images depend only on (seed, index, class list, size): image ``i`` is drawn from its own
``numpy.random.Generator`` seeded with ``(seed, i)``, so any subset can be regenerated and
the output does not depend on how the work is chunked.
"""

from __future__ import annotations

import numpy as np

CLASSES = ("normal", "opacity", "effusion")
# The classes generated when ``data.classes`` is null: the default data's, in its order.
DEFAULT_CLASSES = ("normal", "opacity")


def generate(
    n_per_class: int, classes: list[str] | tuple[str, ...], size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: uint8 ``(N, size, size)`` and int64 ``(N,)``.

    Labels index ``classes``; the images of the classes are interleaved (0, 1, 2, 0, ...).
    """
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown synthetic class {unknown[0]!r}; valid: {', '.join(CLASSES)}")
    n = n_per_class * len(classes)
    labels = np.arange(n, dtype=np.int64) % len(classes)
    images = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        images[i] = render(classes[labels[i]], size, rng)
    return images, labels


def render(finding: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one image with ``finding`` (a name in CLASSES) as uint8 ``(size, size)``."""
    x, y, px = _patient_position(size, rng)

    # Body and soft tissue: a bright silhouette on dark air.
    body = _ellipse(x, y, 0.0, 0.1, rng.uniform(0.82, 0.92), 1.05, px * 3)
    img = 0.06 + 0.50 * body

    # Lung fields: dark ellipses whose lower borders are the diaphragm domes.
    lung_w, lung_h = rng.uniform(0.26, 0.31), rng.uniform(0.50, 0.58)
    lung_cy = rng.uniform(-0.12, -0.04)
    right = _ellipse(x, y, -0.36, lung_cy, lung_w, lung_h, px * 2)
    left = _ellipse(x, y, 0.36, lung_cy, lung_w * 0.95, lung_h * 0.97, px * 2)
    lungs = np.clip(right + left, 0.0, 1.0)
    img -= 0.36 * lungs

    # Mediastinum, heart shadow (bulging into the left lung) and spine.
    heart = _ellipse(x, y, 0.12, lung_cy + 0.30, rng.uniform(0.22, 0.30), 0.24, px * 4)
    img += 0.34 * heart * lungs + 0.05 * heart
    img += 0.10 * np.exp(-(x / 0.06) ** 2) * body

    _add_bones(img, x, y, lungs, rng)
    _add_vessels(img, x, y, lung_cy, lungs, rng)

    # Distractors in every class: nipple shadows low in the lung fields.
    for side in (-1.0, 1.0):
        if rng.random() < 0.35:
            nx, ny = side * rng.uniform(0.40, 0.55), lung_cy + rng.uniform(0.25, 0.38)
            img += rng.uniform(0.05, 0.12) * _blob(x, y, nx, ny, rng.uniform(0.025, 0.04))

    if finding == "opacity":
        img += _opacities(x, y, right, left, rng)
    elif finding == "effusion":
        img += _effusion(x, y, right, left, lung_cy, lung_h, rng)
    return _acquire(img, x, y, rng)


def _patient_position(size: int, rng: np.random.Generator):
    """The normalised image coordinates (x, y) after a small rotation, scale and shift,
    and one pixel in normalised units (for edge softness)."""
    angle = rng.normal(0.0, 0.05)
    scale = rng.uniform(0.92, 1.08)
    shift = rng.normal(0.0, 0.03, size=2)
    lin = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    x = (c * xx - s * yy) / np.float32(scale) - np.float32(shift[0])
    y = (s * xx + c * yy) / np.float32(scale) - np.float32(shift[1])
    return x, y, 2.0 / size


def _add_bones(img, x, y, lungs, rng) -> None:
    """Ribs: nine curved bright bands over each lung, rising from the spine and falling
    laterally, evenly spaced (one periodic profile instead of nine bands); clavicles."""
    spacing = rng.uniform(0.13, 0.16)
    ax = np.abs(x)
    t = (y - (-0.62 + rng.uniform(0.0, spacing)) + 0.30 * ax - 0.65 * ax**2) / spacing
    d = (t - np.round(t)) * spacing  # distance to the nearest rib centre line
    ribs = np.exp(-((d / 0.022) ** 2)) * (t > -0.5) * (t < 8.5) * (ax > 0.05)
    img += 0.09 * ribs * (0.5 + 0.5 * lungs)
    clav = -0.68 - 0.18 * (ax - 0.15) + 0.25 * (ax - 0.15) ** 2
    img += 0.12 * np.exp(-(((y - clav) / 0.03) ** 2)) * (ax > 0.05) * (ax < 0.6)


def _add_vessels(img, x, y, lung_cy, lungs, rng) -> None:
    """Vessel markings: faint branches radiating from each hilum, fading to the periphery."""
    for side in (-1.0, 1.0):
        hx, hy = side * 0.17, lung_cy + 0.02
        for _ in range(rng.integers(5, 9)):
            theta = rng.uniform(-1.2, 1.2) + (0.0 if side > 0 else np.pi)
            dx, dy = np.cos(theta), np.sin(theta)
            along = (x - hx) * dx + (y - hy) * dy
            across = -(x - hx) * dy + (y - hy) * dx
            vessel = np.exp(-((across / 0.012) ** 2) - np.maximum(along, 0.0) / 0.25)
            img += 0.05 * vessel * (along > 0) * lungs


def _acquire(img, x, y, rng) -> np.ndarray:
    """Acquisition: scatter (low-frequency shading), exposure and gamma, then quantum
    noise; quantised to uint8."""
    gx, gy = rng.normal(0.0, 0.05, size=2)
    img += gx * x + gy * y
    img = np.clip(img, 0.0, 1.0)
    img = rng.uniform(0.85, 1.1) * img ** rng.uniform(0.8, 1.25) + rng.normal(0.0, 0.03)
    img += rng.normal(0.0, rng.uniform(0.015, 0.04), size=img.shape).astype(np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _opacities(x, y, right, left, rng):
    """One to three focal opacities inside the lungs; contrast is what makes them hard."""
    out = np.zeros_like(x)
    for _ in range(rng.integers(1, 4)):
        lung = right if rng.random() < 0.5 else left
        # A centre drawn uniformly from the pixels well inside the chosen lung (relative
        # to its peak: at small sizes the soft edge keeps even the centre below 1).
        ys, xs = np.nonzero(lung > 0.9 * lung.max())
        j = rng.integers(len(ys))
        cy, cx = y[ys[j], xs[j]], x[ys[j], xs[j]]
        radius = rng.uniform(0.05, 0.12)
        contrast = rng.uniform(0.10, 0.26)
        out += contrast * _blob(x, y, cx, cy, radius) * lung
    return out


def _effusion(x, y, right, left, lung_cy, lung_h, rng):
    """Fluid filling one costophrenic angle, with a meniscus rising laterally."""
    lung, side = (right, -1.0) if rng.random() < 0.5 else (left, 1.0)
    base = lung_cy + lung_h
    height = rng.uniform(0.10, 0.35)
    level = base - height + 0.25 * height * (1.0 - np.clip(side * x / 0.6, 0.0, 1.0))
    fluid = 1.0 / (1.0 + np.exp(-(y - level) / 0.02))
    return rng.uniform(0.22, 0.34) * fluid * lung


def _ellipse(x, y, cx, cy, rx, ry, soft):
    """Soft-edged filled ellipse, 1 inside, 0 outside, a sigmoid of ``soft`` width."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(rx, ry) / soft))


def _blob(x, y, cx, cy, radius):
    """Round opacity with a soft, slightly irregular margin."""
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / radius**2
    return np.exp(-(r2**1.5))
