"""Splitting: a class too small to be stratified is refused in one line that names it."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe import PipelineError
from medpipe.data.splitting import official_splits, split_indices

CLASSES = ["effusion", "normal"]


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(PipelineError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith("(stage prepare)")
    return message


@pytest.mark.parametrize("n", [1, 2])
def test_a_class_too_small_for_three_splits_is_named(n: int) -> None:
    labels = np.array([1] * 20 + [0] * n)
    images = "1 image" if n == 1 else "2 images"
    assert refusal(split_indices, labels, 0.2, 0.2, seed=0, classes=CLASSES) == (
        f"cannot split the data by class: class 'effusion' has {images}; at least 3 are "
        f"needed to put one in each of train, val and test (stage prepare)")


def test_a_class_with_one_image_left_for_train_and_val() -> None:
    # Three images, but half the data goes to test: two of them may, leaving one.
    labels = np.array([1] * 40 + [0] * 3)
    message = refusal(split_indices, labels, 0.2, 0.5, seed=0, classes=CLASSES)
    assert message == (
        "cannot split the data by class: class 'effusion' has 1 image outside the test "
        "split; at least 2 are needed to put one in each of train and val (stage prepare)")


def test_val_carved_from_an_official_train_split_names_the_class() -> None:
    labels = np.array([1] * 10 + [0] + [1, 0] * 3)
    splits = np.array(["train"] * 11 + ["test"] * 6)
    assert refusal(official_splits, splits, labels, 0.25, seed=0, classes=CLASSES) == (
        "cannot split the data by class: class 'effusion' has 1 image in the train split; "
        "at least 2 are needed to put one in each of train and val (stage prepare)")


def test_multi_label_keys_are_named_by_finding() -> None:
    labels = np.zeros((30, 2), dtype=np.uint8)
    labels[:20, 1] = 1
    labels[20, 0] = 1  # the only image whose rarest finding is 'effusion'
    message = refusal(split_indices, labels, 0.2, 0.2, seed=0, classes=CLASSES)
    assert message.startswith("cannot split the data by class: finding 'effusion' is the "
                              "rarest finding of 1 image; at least 3 are needed")
    labels[21:29, 0] = 1
    labels[29, 1] = 0  # the only image with no finding
    assert refusal(split_indices, labels, 0.2, 0.2, seed=0, classes=CLASSES).startswith(
        "cannot split the data by class: 1 image has no finding; at least 3 are needed")


def test_without_class_names_the_label_is_given() -> None:
    assert "class 1 has 1 image;" in refusal(split_indices, np.array([0] * 20 + [1]),
                                             0.2, 0.2, seed=0)


def test_enough_images_split_as_before() -> None:
    labels = np.array([1] * 20 + [0] * 3)
    named = split_indices(labels, 0.2, 0.2, seed=0, classes=CLASSES)
    plain = split_indices(labels, 0.2, 0.2, seed=0)
    for part in ("train", "val", "test"):
        assert np.array_equal(named[part], plain[part])
        assert (labels[named[part]] == 0).sum() == 1
