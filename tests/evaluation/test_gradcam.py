"""Grad-CAM: a map for every architecture, the right place for a known model, the sample
of cases and the PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from medpipe.evaluation import gradcam
from medpipe.models import architectures
from medpipe.task import MultiClass

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64  # the default image size: stride-32 networks give 2x2 maps


def test_every_model_has_a_target_layer() -> None:
    assert set(architectures.TARGET_LAYERS) == set(architectures.MODELS)


@pytest.mark.parametrize("name", list(architectures.MODELS))
def test_every_architecture_gives_a_finite_varying_map_of_the_input_size(name: str) -> None:
    arch = {"name": name, "in_channels": 1, "num_classes": 3, "image_size": SIZE,
            "width_mult": 1.0, "dropout": 0.2, "mean": [0.4], "std": [0.2]}
    torch.manual_seed(0)
    model = architectures.build_model(arch, freeze_backbone=True).eval()  # frozen: no param grads
    x = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    # Every class of both images: an untrained net may have no positive evidence for one
    # class anywhere (an all-zero map is then the right answer), but not for all three.
    maps = gradcam.grad_cam(model, x.repeat(3, 1, 1, 1), torch.arange(3).repeat_interleave(2),
                            architectures.target_layer(model, name))
    assert maps.shape == (6, SIZE, SIZE)
    assert torch.isfinite(maps).all() and maps.min() >= 0
    assert all(m.max() in (0.0, 1.0) for m in maps)  # scaled to its peak
    for image in range(2):
        assert max(float(maps[image + 2 * c].std()) for c in range(3)) > 0.01  # not flat
    with torch.no_grad():  # no hook left behind: the model computes what it did before
        assert torch.equal(model(x), before)
    assert not any(p.grad is not None for p in model.parameters())


class TwoFindings(nn.Module):
    """Logit 0 is the mean of a bright-spot detector, logit 1 of a dark-spot detector; an
    in-place ReLU follows the target layer, as in DenseNet."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.features.bias.copy_(torch.tensor([-0.5, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.features(x), inplace=True)  # (B, 2, S, S)
        return f.mean((2, 3))


def outside(m: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    rest = torch.ones_like(m, dtype=torch.bool)
    rest[rows, cols] = False
    return m[rest]


def test_the_map_shows_where_the_explained_logit_looks() -> None:
    """A bright spot top right, a dark one bottom left, grey elsewhere: the bright-spot
    logit's map lights the top right only, the dark-spot logit's the bottom left only.
    Gradients alone (uniform here), unweighted activations, the wrong logit or swapped
    axes would each fail."""
    model = TwoFindings()
    x = torch.full((1, 1, 16, 16), 0.5)
    x[..., 2:6, 10:14] = 1.0
    x[..., 10:14, 2:6] = 0.0
    maps = gradcam.grad_cam(model, x.repeat(2, 1, 1, 1), torch.tensor([0, 1]), model.features)
    bright, dark = maps[0], maps[1]
    assert bright[2:6, 10:14].min() > 0.9
    assert outside(bright, slice(1, 7), slice(9, 15)).max() < 0.05
    assert dark[10:14, 2:6].min() > 0.9
    assert outside(dark, slice(9, 15), slice(1, 7)).max() < 0.05


def test_pick_draws_half_wrong_seeded_and_fills_up() -> None:
    correct = np.ones(100, dtype=bool)
    correct[[3, 50, 70, 90, 95]] = False
    chosen = gradcam.pick(correct, 6, seed=0)
    assert len(chosen) == len(set(chosen)) == 6
    assert (~correct[chosen]).sum() == 3 and chosen == gradcam.pick(correct, 6, seed=0)
    assert chosen != gradcam.pick(correct, 6, seed=1)
    assert (~correct[gradcam.pick(correct, 20, seed=0)]).sum() == 5  # every wrong one
    assert sorted(gradcam.pick(correct[:4], 10, seed=0)) == [0, 1, 2, 3]  # no more than there are
    all_wrong = gradcam.pick(np.zeros(10, dtype=bool), 4, seed=0)
    assert len(all_wrong) == 4  # the wrong ones fill the correct half


def test_single_label_cases_explain_the_predicted_class() -> None:
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]])
    predicted = np.array([0, 1, 0, 1])
    two = MultiClass(["normal", "opacity"])
    cases = gradcam.single_label_cases(labels, probs, predicted, two.classes,
                                       ["a", "b", "c", "d"], 4, seed=0,
                                       positive=two.positive_index)
    by_index = {c.index: c for c in cases}
    assert all(c.target == 1 for c in cases)  # a positive class: where is the opacity?
    assert not by_index[2].correct and by_index[2].label == "c_true-opacity_pred-normal_p0.800"
    assert by_index[1].correct and by_index[1].label == "b_true-opacity_pred-opacity_p0.700"
    three = gradcam.single_label_cases(np.array([0, 2]), np.full((2, 3), 1 / 3),
                                       np.array([1, 2]), ["a", "b", "c"], ["x", "y"], 2, seed=0,
                                       positive=None)
    assert {(c.index, c.target) for c in three} == {(0, 1), (1, 2)}  # none: the predicted one
    # Without a positive class two classes are explained as predicted, too.
    per_class = gradcam.single_label_cases(labels, probs, predicted, two.classes,
                                           ["a", "b", "c", "d"], 4, seed=0, positive=None)
    assert {(c.index, c.target) for c in per_class} == {(0, 0), (1, 1), (2, 0), (3, 1)}


def test_multilabel_cases_are_findings_present_or_called() -> None:
    labels = np.array([[1, 0], [0, 0], [0, 1]])
    probs = np.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.3]])
    cases = gradcam.multilabel_cases(labels, probs, np.array([0.5, 0.5]), ["mass", "nodule"],
                                     ["a", "b", "c"], 10, seed=0)
    got = {(c.index, c.target, c.correct) for c in cases}
    assert got == {(0, 0, True), (1, 1, False), (2, 1, False)}  # TP, false alarm, miss
    assert any(c.label == "b_nodule_true-absent_pred-present_p0.700" for c in cases)


def test_write_maps_writes_titled_overlays(tmp_path: Path) -> None:
    arch = {"name": "cnn", "in_channels": 1, "num_classes": 2, "image_size": 32,
            "width_mult": 1.0, "dropout": 0.0, "mean": [0.5], "std": [0.25]}
    torch.manual_seed(0)
    model = architectures.build_model(arch).eval()
    images = np.random.default_rng(0).integers(0, 255, (5, 1, 32, 32)).astype(np.uint8)
    cases = [gradcam.Case(4, 1, False, "img 4_true-a_pred-b_p0.600", "img 4"),
             gradcam.Case(1, 0, True, "img-1_true-a_pred-a_p0.900", "img-1")]
    paths = gradcam.write_maps(model, "cnn", images, cases, tmp_path, torch.device("cpu"))
    assert [p.name for p in paths] == ["00_wrong_img-4_true-a_pred-b_p0.600.png",
                                       "01_correct_img-1_true-a_pred-a_p0.900.png"]
    with Image.open(paths[0]) as img:
        pixels = np.asarray(img.convert("RGB"))
    scale = gradcam.VIEW_SIDE // 32
    assert pixels.shape[1] == 2 * 32 * scale + 4 and pixels.shape[0] > 32 * scale
    left = pixels[-32 * scale:, : 32 * scale]
    right = pixels[-32 * scale:, 32 * scale + 4:]
    assert (left[..., 0] == left[..., 2]).all()  # the image as it is: grey
    assert (right[..., 0] != right[..., 2]).any()  # the heat map over it: coloured
