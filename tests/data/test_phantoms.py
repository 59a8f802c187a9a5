"""The synthetic chest-radiograph generator: determinism, layout and a real class signal."""

from __future__ import annotations

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
