"""The synthetic chest-radiograph generator: determinism (the same bytes on every CPU,
pinned by committed digests), layout and a real class signal."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from medpipe.data import phantoms

SIZE = 32


def test_same_arguments_give_identical_bytes() -> None:
    a, la = phantoms.generate(3, ["normal", "opacity"], SIZE, seed=7)
    b, lb = phantoms.generate(3, ["normal", "opacity"], SIZE, seed=7)
    assert a.tobytes() == b.tobytes()
    assert np.array_equal(la, lb)


def test_different_seed_gives_different_images() -> None:
    a, _ = phantoms.generate(3, ["normal", "opacity"], SIZE, seed=0)
    b, _ = phantoms.generate(3, ["normal", "opacity"], SIZE, seed=1)
    assert a.shape == b.shape
    # Every image differs, not just one of them.
    for i in range(len(a)):
        assert not np.array_equal(a[i], b[i]), i


def test_image_i_does_not_depend_on_n_per_class() -> None:
    classes = ["normal", "opacity", "effusion"]
    small, small_labels = phantoms.generate(3, classes, SIZE, seed=3)
    large, large_labels = phantoms.generate(5, classes, SIZE, seed=3)
    k = len(small)
    assert k == 9
    assert np.array_equal(small, large[:k])
    assert np.array_equal(small_labels, large_labels[:k])


def test_shapes_dtypes_and_interleaved_labels() -> None:
    images, labels = phantoms.generate(4, ["normal", "effusion", "opacity"], SIZE, seed=0)
    assert images.shape == (12, SIZE, SIZE)
    assert images.dtype == np.uint8
    assert labels.shape == (12,)
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2] * 4
    # Images are not blank and use a real part of the intensity range.
    assert all(int(img.max()) - int(img.min()) > 50 for img in images)


def test_unknown_class_raises() -> None:
    with pytest.raises(ValueError, match="tumour"):
        phantoms.generate(2, ["normal", "tumour"], SIZE, seed=0)


def _inner_lung_window(size: int) -> np.ndarray:
    """Pixels well inside the average lung fields (normalised coords), heart excluded."""
    lin = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(lin, lin, indexing="ij")

    def r(cx: float) -> np.ndarray:
        return np.sqrt(((xx - cx) / 0.28) ** 2 + ((yy + 0.08) / 0.54) ** 2)

    lungs = (r(-0.36) < 0.6) | (r(0.36) < 0.6)
    heart = np.sqrt(((xx - 0.12) / 0.30) ** 2 + ((yy - 0.22) / 0.26) ** 2) < 1.0
    return lungs & ~heart


def test_opacity_images_are_brighter_inside_the_lungs() -> None:
    """A real class signal: focal opacities raise the lung-field intensity.

    Exposure and gamma vary per image, so each image's lung-window mean is expressed
    relative to its own mean and spread (a z-score); the class difference must then be
    clearly significant (Welch t above 4; it is 6.8 to 8.8 over seeds 0-7 here).
    """
    n = 100
    images, labels = phantoms.generate(n, ["normal", "opacity"], SIZE, seed=0)
    window = _inner_lung_window(SIZE)
    assert window.sum() > 0.05 * SIZE * SIZE
    f = images.astype(np.float64)
    z = (f[:, window].mean(axis=1) - f.mean(axis=(1, 2))) / f.std(axis=(1, 2))
    normal, opacity = z[labels == 0], z[labels == 1]
    diff = opacity.mean() - normal.mean()
    se = np.sqrt(normal.var(ddof=1) / n + opacity.var(ddof=1) / n)
    assert diff > 0
    assert diff / se > 4.0, f"weak class signal: t = {diff / se:.2f}"
    # And per image, not just on average: most opacity images outrank most normal ones.
    auc = (opacity[:, None] > normal[None, :]).mean()
    assert auc > 0.65, auc


def test_normal_class_has_no_opacity_signal_between_seeds() -> None:
    """Control for the test above: two sets of *normal* images show no such difference."""
    a, _ = phantoms.generate(100, ["normal"], SIZE, seed=0)
    b, _ = phantoms.generate(100, ["normal"], SIZE, seed=1)
    window = _inner_lung_window(SIZE)

    def z(images: np.ndarray) -> np.ndarray:
        f = images.astype(np.float64)
        return (f[:, window].mean(axis=1) - f.mean(axis=(1, 2))) / f.std(axis=(1, 2))

    za, zb = z(a), z(b)
    t = (zb.mean() - za.mean()) / np.sqrt(za.var(ddof=1) / 100 + zb.var(ddof=1) / 100)
    assert abs(t) < 3.0, t


@pytest.mark.parametrize("size", [16, 24])
def test_small_opacity_images_render(size: int) -> None:
    """Regression: below ~40 px no lung pixel reached 0.9 and ``_opacities`` drew from an
    empty set (``rng.integers(0)`` -> ValueError), though ``data.resolution >= 16`` is allowed."""
    images, labels = phantoms.generate(3, ["normal", "opacity"], size, seed=0)
    assert images.shape == (6, size, size)
    assert labels.tolist() == [0, 1] * 3


# ------------------------------------------------------------ the same bytes on every CPU

# SHA-256 of the images' and then the labels' bytes. A change of the generator, or of a
# computation that rounds differently on another CPU, changes them: the default data
# (data/raw) would then differ from the committed dvc.lock's.
DIGESTS = {
    (4, ("normal", "opacity", "effusion"), 64, 7):
        "d4480f586e3128f3c2fc9daaf61101b5082e82364bb8fca3e123a945e6252683",
    (20, ("normal", "opacity"), 128, 0):
        "c8ef1b4439d228933c633dd23a7bf3c2c9d6e77eba089be6b9e234c73ea328d4",
}
# The default params: data.n_per_class, data.classes (null: normal, opacity),
# data.resolution, data.seed.
DEFAULT = (1000, ("normal", "opacity"), 128, 0)
DEFAULT_DIGEST = "aa6eb8033912095427a0e793933ece4146cd7d391e75e55ccabbb423a1a26500"


def digest(n_per_class: int, classes, size: int, seed: int) -> str:
    images, labels = phantoms.generate(n_per_class, list(classes), size, seed)
    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()


@pytest.mark.parametrize("config", list(DIGESTS))
def test_generated_bytes_match_the_committed_digest(config) -> None:
    assert digest(*config) == DIGESTS[config]


@pytest.mark.slow
def test_default_data_matches_the_committed_digest() -> None:
    assert digest(*DEFAULT) == DEFAULT_DIGEST


# NumPy picks its SIMD loops at import time by the CPU's features; these switch the
# dispatched ones off, so that this CPU computes as an older one would: AVX2 (x86-64-v3,
# as on the AMD EPYC machines), then the SSE4.2 baseline (x86-64-v2). Names this NumPy
# or CPU does not know are ignored.
WITHOUT_AVX512 = "X86_V4 AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
INSTRUCTION_SETS = {"avx2": WITHOUT_AVX512, "sse4.2": f"X86_V3 AVX2 FMA3 {WITHOUT_AVX512}"}


@pytest.mark.parametrize("isa", list(INSTRUCTION_SETS))
def test_the_same_bytes_whatever_simd_instruction_set(isa) -> None:
    """The float32 generator this replaces gave three different digests here: NumPy's
    vectorised exp, sin, cos and power differ in the last bit between instruction sets."""
    config = (20, ("normal", "opacity"), 128, 0)
    code = ("import hashlib, sys; from medpipe.data import phantoms; "
            f"i, l = phantoms.generate({config[0]}, {list(config[1])}, {config[2]}, "
            f"{config[3]}); sys.stdout.write(hashlib.sha256(i.tobytes() + l.tobytes())"
            ".hexdigest())")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": INSTRUCTION_SETS[isa]}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    assert done.stdout == DIGESTS[config]


def test_elementary_functions_are_accurate() -> None:
    a = np.linspace(-700.0, 700.0, 20001)
    exact = np.array([math.exp(v) for v in a])
    assert np.max(np.abs(phantoms.exp(a) - exact) / exact) < 1e-15
    x = np.exp(np.linspace(-40.0, 0.0, 20001))
    exact = np.array([math.log(v) for v in x])
    assert np.max(np.abs(phantoms.log(x) - exact)) < 1e-14
    for t in np.linspace(-2.0, 2.0, 401):
        s, c = phantoms._sin_cos(float(t))
        assert abs(s - math.sin(t)) < 1e-15 and abs(c - math.cos(t)) < 1e-15
