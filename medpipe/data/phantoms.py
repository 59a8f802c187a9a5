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

The bytes are the same on every x86-64 CPU (and any IEEE 754 machine with the same NumPy):
the images are computed in float64 with the operations IEEE 754 rounds exactly (+, -, *,
/, sqrt, rounding, comparisons), which NumPy's SIMD loops compute to the bit whatever the
instruction set. NumPy's ``exp``, ``log``, ``sin``, ``cos`` and ``**`` are not used: their
vectorised versions (AVX2, AVX-512, SVML) differ in the last bit from one CPU to another,
which moved some pixels by one level. :func:`exp`, :func:`log` and :func:`_sin_cos` build
them from exact operations instead.
"""

from __future__ import annotations

import math

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
    img += 0.10 * exp(-_square(x / 0.06)) * body

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
    lin = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    s, c = _sin_cos(float(angle))
    x = (c * xx - s * yy) / scale - shift[0]
    y = (s * xx + c * yy) / scale - shift[1]
    return x, y, 2.0 / size


def _add_bones(img, x, y, lungs, rng) -> None:
    """Ribs: nine curved bright bands over each lung, rising from the spine and falling
    laterally, evenly spaced (one periodic profile instead of nine bands); clavicles."""
    spacing = rng.uniform(0.13, 0.16)
    ax = np.abs(x)
    t = (y - (-0.62 + rng.uniform(0.0, spacing)) + 0.30 * ax - 0.65 * (ax * ax)) / spacing
    d = (t - np.round(t)) * spacing  # distance to the nearest rib centre line
    ribs = exp(-_square(d / 0.022)) * (t > -0.5) * (t < 8.5) * (ax > 0.05)
    img += 0.09 * ribs * (0.5 + 0.5 * lungs)
    clav = -0.68 - 0.18 * (ax - 0.15) + 0.25 * _square(ax - 0.15)
    img += 0.12 * exp(-_square((y - clav) / 0.03)) * (ax > 0.05) * (ax < 0.6)


def _add_vessels(img, x, y, lung_cy, lungs, rng) -> None:
    """Vessel markings: faint branches radiating from each hilum, fading to the periphery."""
    for side in (-1.0, 1.0):
        hx, hy = side * 0.17, lung_cy + 0.02
        for _ in range(rng.integers(5, 9)):
            # The direction theta, or theta + pi on the right: (cos, sin) turned round.
            dy, dx = _sin_cos(rng.uniform(-1.2, 1.2))
            dx, dy = (dx, dy) if side > 0 else (-dx, -dy)
            along = (x - hx) * dx + (y - hy) * dy
            across = -(x - hx) * dy + (y - hy) * dx
            vessel = exp(-_square(across / 0.012) - np.maximum(along, 0.0) / 0.25)
            img += 0.05 * vessel * (along > 0) * lungs


def _acquire(img, x, y, rng) -> np.ndarray:
    """Acquisition: scatter (low-frequency shading), exposure and gamma, then quantum
    noise; quantised to uint8."""
    gx, gy = rng.normal(0.0, 0.05, size=2)
    img += gx * x + gy * y
    img = np.clip(img, 0.0, 1.0)
    img = rng.uniform(0.85, 1.1) * _power(img, rng.uniform(0.8, 1.25)) + rng.normal(0.0, 0.03)
    img += rng.normal(0.0, rng.uniform(0.015, 0.04), size=img.shape)
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
    fluid = 1.0 / (1.0 + exp(-(y - level) / 0.02))
    return rng.uniform(0.22, 0.34) * fluid * lung


def _ellipse(x, y, cx, cy, rx, ry, soft):
    """Soft-edged filled ellipse, 1 inside, 0 outside, a sigmoid of ``soft`` width."""
    r = np.sqrt(_square((x - cx) / rx) + _square((y - cy) / ry))
    return 1.0 / (1.0 + exp((r - 1.0) * min(rx, ry) / soft))


def _blob(x, y, cx, cy, radius):
    """Round opacity with a soft, slightly irregular margin."""
    r2 = (_square(x - cx) + _square(y - cy)) / (radius * radius)
    return exp(-(r2 * np.sqrt(r2)))


# Elementary functions from exactly rounded operations only, so that they give the same
# bits on every CPU. Accurate to a few units in the last place, far below the 1/255 of a
# grey level that the images are quantised to.

LN2 = 0.6931471805599453  # the double nearest ln 2
# ln 2 split in two (Cody and Waite): k * LN2_HI is exact for |k| < 2 ** 11, so that the
# reduced argument keeps its accuracy for large |a|.
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_EXP_TERMS = [1.0 / math.factorial(k) for k in range(14)]  # exact enough: 1/k! rounded once


def _square(a: np.ndarray) -> np.ndarray:
    return a * a


def exp(a) -> np.ndarray:
    """e ** a, elementwise (float64): a = k ln 2 + r with |r| <= ln 2 / 2, e ** r by its
    Taylor polynomial (degree 13, relative error below 1e-16), times 2 ** k exactly.
    Arguments are clipped to [-700, 700]: e ** -700 is 1e-304, zero for an image."""
    a = np.clip(np.asarray(a, dtype=np.float64), -700.0, 700.0)
    k = np.rint(a / LN2)
    r = (a - k * LN2_HI) - k * LN2_LO
    p = np.full_like(r, _EXP_TERMS[-1])
    for c in reversed(_EXP_TERMS[:-1]):
        p = p * r + c
    return np.ldexp(p, k.astype(np.int32))


def log(a) -> np.ndarray:
    """The natural logarithm of positive ``a``, elementwise (float64): a = m 2 ** e with m
    in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), by its series."""
    m, e = np.frexp(np.asarray(a, dtype=np.float64))  # m in [1/2, 1)
    low = m < math.sqrt(0.5)
    m = np.where(low, m * 2.0, m)
    e = np.where(low, e - 1, e)
    s = (m - 1.0) / (m + 1.0)  # |s| <= 0.172: s ** 2 <= 0.0295
    s2 = s * s
    p = np.full_like(s, 1.0 / 27.0)
    for n in range(25, 0, -2):
        p = p * s2 + 1.0 / n
    return 2.0 * s * p + e * LN2


def _power(a: np.ndarray, g: float) -> np.ndarray:
    """a ** g for a in [0, 1]: 0 where a is 0."""
    positive = a > 0.0
    return np.where(positive, exp(g * log(np.where(positive, a, 1.0))), 0.0)


def _sin_cos(t: float) -> tuple[float, float]:
    """(sin t, cos t) for |t| <= 2 by their Taylor series, in Python floats."""
    if abs(t) > 2.0:
        raise ValueError(f"_sin_cos needs |t| <= 2, got {t}")
    sin, cos, term = 0.0, 0.0, 1.0  # term: t ** n / n!
    for n in range(32):
        if n % 4 == 0:
            cos += term
        elif n % 4 == 1:
            sin += term
        elif n % 4 == 2:
            cos -= term
        else:
            sin -= term
        term = term * t / (n + 1)
    return sin, cos
