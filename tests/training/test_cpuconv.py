"""Unfolded weight gradients for tiny-output convolutions on the CPU (medpipe.training.cpuconv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from medpipe.data.store import Split
from medpipe.models import architectures
from medpipe.params.loading import parse_section
from medpipe.training import cpuconv, loop
from medpipe.utils import seeding

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def conv_grads(fn, x, w, b, stride, padding, x_grad):
    x = x.detach().clone().requires_grad_(x_grad)
    w = w.detach().clone().requires_grad_()
    b = None if b is None else b.detach().clone().requires_grad_()
    out = fn(x, w, b, stride, padding)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), x.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("c, k, kernel, stride, side, bias, nhwc, x_grad", [
    (8, 6, 3, 1, 2, False, False, True),   # 2x2 output, as a ResNet's last stage at 48-64 px
    (8, 6, 3, 2, 3, False, True, True),    # strided, NHWC
    (8, 6, 3, 1, 1, True, False, True),    # 1x1 output, with a bias
    (5, 4, 3, 2, 4, True, True, False),    # a first layer: no gradient for the input
    (4, 3, 1, 2, 3, False, False, True),   # 1x1 kernel (the function itself takes any)
])
def test_unfolded_gradients_equal_the_convolution_gradients(c, k, kernel, stride, side, bias,
                                                           nhwc, x_grad) -> None:
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    x = torch.randn(3, c, side, side, generator=gen, dtype=torch.float64).contiguous(
        memory_format=fmt)
    w = torch.randn(k, c, kernel, kernel, generator=gen, dtype=torch.float64).contiguous(
        memory_format=fmt)
    b = torch.randn(k, generator=gen, dtype=torch.float64) if bias else None
    padding = (kernel // 2, kernel // 2)
    plain = conv_grads(F.conv2d, x, w, b, (stride, stride), padding, x_grad)
    unfolded = conv_grads(lambda *a: cpuconv._UnfoldGradConv2d.apply(*a, (1, 1)),
                          x, w, b, (stride, stride), padding, x_grad)
    assert (plain[1] is not None) is x_grad
    for name, mine, ref in zip(("output", "input grad", "weight grad", "bias grad"),
                               unfolded, plain, strict=True):
        if ref is None:
            assert mine is None, name
        else:
            torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("module, eligible", [
    (nn.Conv2d(512, 512, 3, padding=1, bias=False), True),
    (nn.Conv2d(128, 256, 3, stride=2, padding=1), True),   # 294,912 weights
    (nn.Conv2d(64, 64, 3, padding=1), False),              # small: oneDNN is as fast
    (nn.Conv2d(512, 512, 1), False),                       # 1x1 kernel
    (nn.Conv2d(512, 512, 3, padding=1, groups=512), False),  # depthwise
    (nn.Conv2d(512, 512, 3, padding="same"), False),
    (nn.Conv2d(512, 512, 3, padding=1, padding_mode="reflect"), False),
    (nn.ConvTranspose2d(512, 512, 3), False),
])
def test_which_convolutions_are_eligible(module: nn.Module, eligible: bool) -> None:
    assert cpuconv.eligible(module) is eligible


def resnet18(size: int) -> architectures.Classifier:
    arch = {"name": "resnet18", "in_channels": 1, "num_classes": 2, "image_size": size,
            "width_mult": 1.0, "small_input": False, "dropout": 0.0, "mean": [0.5],
            "std": [0.2]}
    torch.manual_seed(0)
    return architectures.build_model(arch)


def test_resnet18_at_48px_unfolds_only_its_2x2_stage_and_keeps_its_gradients() -> None:
    model = resnet18(48).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 1, 0])

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    took: dict[str, str] = {}
    hooks = [m.register_forward_hook(
        lambda m, i, o, name=name: took.__setitem__(name, type(o.grad_fn).__name__))
        for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    plain = grads()
    assert not any("Unfold" in kind for kind in took.values())
    with cpuconv.unfold_weight_grad(model) as switched:
        unfolded = grads()
    for h in hooks:
        h.remove()
    # layer3's four 3x3 convolutions are big enough, but their outputs are 3x3 at 48 px.
    assert switched == 8
    assert sorted(name for name, kind in took.items() if "Unfold" in kind) == [
        "net.layer4.0.conv1", "net.layer4.0.conv2", "net.layer4.1.conv1", "net.layer4.1.conv2"]
    for mine, ref in zip(unfolded, plain, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-6)
    assert not any("forward" in vars(m) for m in model.modules())  # put back


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Grows by one each time a convolution takes the unfolded path."""
    seen: list[int] = []
    real = cpuconv._UnfoldGradConv2d.apply
    monkeypatch.setattr(cpuconv._UnfoldGradConv2d, "apply",
                        lambda *a: seen.append(1) or real(*a))
    return seen


def test_not_taken_without_gradients_and_put_back_after_an_error(calls: list[int]) -> None:
    model = resnet18(32)
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(RuntimeError, match="boom"), cpuconv.unfold_weight_grad(model):
        with torch.no_grad():
            model(x)
        model.eval()
        with torch.inference_mode():
            model(x)
        assert calls == []
        model(x)  # with gradients: layer3's (2x2) and layer4's (1x1) 3x3 convolutions
        assert len(calls) == 8
        raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in model.modules())
    model(x)
    assert len(calls) == 8
    with cpuconv.unfold_weight_grad(model, enabled=False) as switched:
        model(x)
    assert switched == 0 and len(calls) == 8


def test_fit_on_the_cpu_unfolds_and_gives_the_same_model_twice(calls: list[int]) -> None:
    values = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["train"]
    values.update({"model": "resnet18", "batch_size": 8, "epochs": 1, "device": "cpu",
                   "schedule": "constant", "warmup_epochs": 0})
    cfg = parse_section("train", values, stage="train")
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 255, (16, 1, 32, 32), dtype=np.uint8),
                  np.arange(16, dtype=np.int64) % 2)
    states = []
    for _ in range(2):
        seeding.seed_everything(0)
        model = resnet18(32)
        loop.fit(model, split, split, cfg, torch.device("cpu"))
        states.append(model.state_dict())
        assert not any("forward" in vars(m) for m in model.modules())
    assert len(calls) == 2 * 2 * 8  # 2 runs x 2 batches x 8 convolutions
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
