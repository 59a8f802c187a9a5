"""Batch augmentation on the device: what each transform does, seeding, and the preview."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from augmentparams import PARAMS, augment_cfg

from medpipe.params.loading import parse_section
from medpipe.training.augment import augment_batch, is_identity, preview

cfg = augment_cfg


def ramp(b: int = 4, size: int = 16) -> torch.Tensor:
    """Images whose intensity rises left to right: flips and shifts are easy to see."""
    row = torch.linspace(0.1, 0.9, size)
    return row.expand(b, 1, size, size).clone()


def test_committed_defaults_leave_flips_off() -> None:
    committed = parse_section("augment", yaml.safe_load(PARAMS.read_text())["augment"],
                              stage="train")
    assert committed.hflip_p == 0.0 and committed.vflip_p == 0.0


def test_all_off_is_identity_and_draws_nothing() -> None:
    x = ramp()
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert is_identity(cfg())
    assert augment_batch(x, cfg(), gen) is x
    assert torch.equal(gen.get_state(), state)


def test_hflip_with_p1_mirrors_every_image() -> None:
    x = ramp()
    out = augment_batch(x, cfg(hflip_p=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), atol=1e-5, rtol=0)


def test_vflip_with_p1_mirrors_rows() -> None:
    x = torch.rand(3, 1, 16, 16)
    out = augment_batch(x, cfg(vflip_p=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.flip(x, dims=[2]), atol=1e-5, rtol=0)


def test_rotation_changes_images_but_keeps_range_and_shape() -> None:
    x = torch.rand(8, 3, 24, 24)
    out = augment_batch(x, cfg(affine_p=1.0, rotation=30.0, translate=0.0, scale=[1.0, 1.0]),
                        torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.allclose(out, x, atol=1e-3)


def test_zoom_in_enlarges_a_central_square() -> None:
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0  # an 8 px bright square in the middle
    out = augment_batch(x, cfg(affine_p=1.0, rotation=0.0, translate=0.0, scale=[2.0, 2.0]),
                        torch.Generator().manual_seed(0))
    assert (out > 0.5).sum() > 3 * (x > 0.5).sum()  # about 4x the area at 2x zoom


def test_probability_selects_a_subset() -> None:
    x = ramp(b=400)
    out = augment_batch(x, cfg(hflip_p=0.3), torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] > 0.5).float().mean().item()  # left edge now bright
    assert 0.2 < flipped < 0.4


def test_intensity_and_noise_stay_in_range_and_vary_per_image() -> None:
    x = torch.full((16, 1, 8, 8), 0.5)
    out = augment_batch(x, cfg(intensity_p=1.0, brightness=0.2, contrast=0.5, gamma=0.5,
                               noise_p=1.0, noise_std=0.1), torch.Generator().manual_seed(0))
    assert out.min() >= 0.0 and out.max() <= 1.0
    means = out.mean(dim=(1, 2, 3))
    assert means.std() > 0.02  # brightness / gamma differ between images


def test_same_seed_same_augmentation_and_other_seed_differs() -> None:
    x = torch.rand(6, 1, 16, 16)
    c = cfg(affine_p=1.0, rotation=20.0, intensity_p=1.0, noise_p=0.5)
    a = augment_batch(x, c, torch.Generator().manual_seed(3))
    b = augment_batch(x, c, torch.Generator().manual_seed(3))
    d = augment_batch(x, c, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, d)


def test_preview_grid_shape_and_first_row_is_the_input() -> None:
    images = (np.random.default_rng(0).random((5, 1, 10, 10)) * 255).astype(np.uint8)
    img = preview(images, cfg(affine_p=1.0, rotation=30.0), seed=0, rows=3)
    arr = np.asarray(img)
    assert arr.shape == (3 * 12 + 2, 5 * 12 + 2)
    np.testing.assert_array_equal(arr[2:12, 2:12], images[0, 0])
    assert not np.array_equal(arr[14:24, 2:12], images[0, 0])


@pytest.mark.parametrize(("key", "value"), [("affine_p", 1.5), ("contrast", 1.0),
                                            ("scale", [1.2, 0.9]), ("rotation", -1.0)])
def test_bad_augment_values_are_refused(key: str, value) -> None:
    from medpipe import PipelineError
    from medpipe.params.loading import validate

    with pytest.raises(PipelineError, match=f"augment.{key}"):
        validate(dataclasses.replace(cfg(), **{key: value}), stage="train")
