"""Model builders, freezing, the safe checkpoint, and ImageNet weights offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchfiles import CODE, Payload, check_refusal, unloadable_files

from medpipe import PipelineError
from medpipe.models import architectures, checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_arch(name: str = "cnn", *, in_channels: int = 1, num_classes: int = 2,
              image_size: int = 16, width_mult: float = 1.0, dropout: float = 0.0
              ) -> dict[str, Any]:
    return {
        "name": name,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": image_size,
        "width_mult": width_mult,
        "dropout": dropout,
        "mean": [0.4] * in_channels,
        "std": [0.2] * in_channels,
    }


def bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


# ------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("size", [16, 28, 40, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_small_cnn_any_size_and_channels(size: int, channels: int) -> None:
    arch = make_arch(in_channels=channels, num_classes=3, image_size=size)
    model = architectures.build_model(arch)
    out = model.eval()(torch.rand(2, channels, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_small_cnn_rejects_the_wrong_image_size() -> None:
    """The flattened size is tied to image_size: a mismatch is not silently accepted."""
    model = architectures.build_model(make_arch(image_size=16))
    with pytest.raises(RuntimeError):
        model(torch.rand(1, 1, 32, 32))


def test_mobilenet_v2_half_width_one_channel() -> None:
    arch = make_arch("mobilenet_v2", in_channels=1, num_classes=3, image_size=32,
                     width_mult=0.5)
    model = architectures.build_model(arch)
    assert model.net.features[0][0].in_channels == 1
    out = model.eval()(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3)


def test_classifier_normalises_with_its_buffers() -> None:
    """Classifier feeds (x - mean) / std to the network."""
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return x.flatten(1)[:, :2]

    model = architectures.Classifier(Spy(), mean=[0.5], std=[0.25])
    model(torch.full((1, 1, 2, 2), 0.75))
    assert torch.allclose(seen[0], torch.ones(1, 1, 2, 2))
    assert set(dict(model.named_buffers())) == {"mean", "std"}


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(PipelineError) as info:
        architectures.build_model(make_arch("resnet9000"))
    message = str(info.value)
    assert "resnet9000" in message
    assert "cnn" in message and "mobilenet_v2" in message


def test_cnn_has_no_pretrained_weights() -> None:
    with pytest.raises(PipelineError, match="pretrained"):
        architectures.build_model(make_arch(), weights={})


def test_pretrained_needs_width_one() -> None:
    arch = make_arch("mobilenet_v2", image_size=32, width_mult=0.5)
    with pytest.raises(PipelineError, match="width_mult"):
        architectures.build_model(arch, weights=random_mobilenet_state())


# -------------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("name", ["cnn", "mobilenet_v2"])
def test_freeze_backbone_trains_only_the_head(name: str) -> None:
    arch = make_arch(name, image_size=32, width_mult=0.5)
    model = architectures.build_model(arch, freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {f"net.classifier.{n}" for n, _ in model.net.classifier.named_parameters()}
    assert trainable == head
    assert trainable  # the head does train
    unfrozen = architectures.build_model(arch)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_frozen_backbone_batchnorm_stays_in_eval_mode() -> None:
    arch = make_arch("mobilenet_v2", image_size=32, width_mult=0.5, dropout=0.2)
    model = architectures.build_model(arch, freeze_backbone=True)
    model.train()
    bns = [m for m in model.net.features.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.training and model.net.classifier.training  # dropout in the head is on
    before = bn_stats(model.net.features)
    model(torch.rand(4, 1, 32, 32))
    after = bn_stats(model.net.features)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_unfrozen_batchnorm_does_update_in_train_mode() -> None:
    """Control for the test above: without freezing, a train-mode forward moves the stats."""
    model = architectures.build_model(make_arch("mobilenet_v2", image_size=32, width_mult=0.5))
    model.train()
    before = bn_stats(model.net.features)
    model(torch.rand(4, 1, 32, 32))
    after = bn_stats(model.net.features)
    assert not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


# ------------------------------------------------------------------------------ checkpoints


def save(path: Path, model: architectures.Classifier, arch: dict[str, Any]) -> None:
    checkpoint.save_checkpoint(path, model, arch=arch, classes=["normal", "opacity"],
                           params={"lr": 0.1}, info={"best_epoch": 3})


@pytest.mark.parametrize("name", ["cnn", "mobilenet_v2"])
def test_checkpoint_round_trip(tmp_path: Path, name: str) -> None:
    arch = make_arch(name, image_size=32, width_mult=0.5)
    torch.manual_seed(0)
    model = architectures.build_model(arch).eval()
    path = tmp_path / "model.pt"
    save(path, model, arch)

    raw = torch.load(path, weights_only=True)  # plain data: no code needs unpickling
    assert raw["format"] == checkpoint.CHECKPOINT_FORMAT
    assert raw["arch"] == arch
    assert raw["classes"] == ["normal", "opacity"]
    assert raw["preprocess"]["image_size"] == 32 and raw["preprocess"]["channels"] == 1
    assert raw["info"] == {"best_epoch": 3}

    loaded, ckpt = checkpoint.load_checkpoint(path)
    assert not loaded.training
    assert ckpt["params"] == {"lr": 0.1}
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_checkpoint_round_trip_with_frozen_backbone(tmp_path: Path) -> None:
    arch = make_arch("cnn")
    model = architectures.build_model(arch, freeze_backbone=True).eval()
    path = tmp_path / "model.pt"
    save(path, model, arch)
    loaded, _ = checkpoint.load_checkpoint(path)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_with_pickled_code_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "state_dict": Payload(marker)}, path)
    with pytest.raises(PipelineError, match="refused: not a model file this pipeline wrote"):
        checkpoint.load_checkpoint(path)
    assert not marker.exists()
    # The payload is real: a full unpickle does run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_and_foreign_checkpoints_are_pipeline_errors(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="model file not found"):
        checkpoint.load_checkpoint(tmp_path / "none.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(PipelineError, match="refused: not a PyTorch file"):
        checkpoint.load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(PipelineError, match="not a medpipe model file"):
        checkpoint.load_checkpoint(foreign)


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "empty", "pickled code",
                                  "pickled code, legacy format"])
def test_unloadable_checkpoint_is_refused_in_one_line_without_unsafe_advice(
        tmp_path: Path, kind: str) -> None:
    path, reason = unloadable_files(tmp_path)[kind]
    with pytest.raises(PipelineError) as caught:
        checkpoint.load_checkpoint(path)
    check_refusal(str(caught.value), path, reason)
    if reason == CODE:
        assert "not a model file this pipeline wrote" in str(caught.value)
        assert "posix.system" in str(caught.value) or "nt.system" in str(caught.value)


# ------------------------------------------------------------------------ ImageNet weights
# (where the file comes from: tests/models/test_imagenet.py)


def random_mobilenet_state() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision mobilenet_v2 state dict, standing in for the
    ImageNet one (which cannot be downloaded here)."""
    import torchvision

    torch.manual_seed(123)
    return torchvision.models.mobilenet_v2(weights=None).state_dict()


def test_pretrained_one_channel_sums_the_rgb_kernels() -> None:
    saved = random_mobilenet_state()
    model = architectures.build_model(make_arch("mobilenet_v2", in_channels=1, image_size=32),
                               weights=saved)
    first = model.net.features[0][0]
    assert first.weight.shape == (32, 1, 3, 3)
    expected = saved["features.0.0.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(first.weight, expected, atol=1e-6)
    # The rest of the backbone is the saved weights.
    state = model.net.state_dict()
    for key in ("features.1.conv.0.0.weight", "features.18.1.running_var"):
        assert torch.equal(state[key], saved[key])
    # A grey image through the adapted conv equals the RGB conv on the replicated image.
    rgb = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
    with torch.no_grad():
        rgb.weight.copy_(saved["features.0.0.weight"])
        x = torch.rand(1, 1, 16, 16)
        assert torch.allclose(first(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_pretrained_three_channels_keep_the_kernel() -> None:
    saved = random_mobilenet_state()
    model = architectures.build_model(make_arch("mobilenet_v2", in_channels=3, image_size=32),
                               weights=saved, freeze_backbone=True)
    assert torch.equal(model.net.features[0][0].weight, saved["features.0.0.weight"])
    assert model.net.classifier[1].out_features == 2


def test_weights_of_another_architecture_are_a_pipeline_error() -> None:
    with pytest.raises(PipelineError, match="do not fit resnet18"):
        architectures.build_model(make_arch("resnet18", image_size=32),
                           weights=random_mobilenet_state())


@pytest.mark.parametrize("name", [n for n in architectures.MODELS if n != "cnn"])
def test_every_torchvision_model_adapts_channels_classes_and_small_stem(name: str) -> None:
    """1-channel 28 px input, 3 classes, small stem, frozen backbone: the head alone trains."""
    arch = {"name": name, "in_channels": 1, "num_classes": 3, "image_size": 28,
            "width_mult": 1.0, "small_input": True, "dropout": 0.1, "mean": [0.5],
            "std": [0.25]}
    model = architectures.build_model(arch, freeze_backbone=True).train()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    spec = architectures.TORCHVISION[name]
    stem = model.net.get_submodule(spec.stem)
    assert stem.in_channels == 1 and stem.stride == (1, 1) and stem.kernel_size == (3, 3)
    if spec.pool is not None:
        assert isinstance(model.net.get_submodule(spec.pool), torch.nn.Identity)
    head = spec.head.split(".")[0]
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {head}


def test_small_stem_keeps_the_centre_of_a_pretrained_kernel() -> None:
    conv = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    small = architectures._small_stem(architectures.adapt_first_conv(conv, 3, pretrained=True))
    assert small.stride == (1, 1) and small.kernel_size == (3, 3)
    torch.testing.assert_close(small.weight, conv.weight[:, :, 2:5, 2:5])


def test_every_model_the_params_allow_is_built() -> None:
    """train.model's choices (medpipe.params) are exactly the architectures' builders."""
    import typing

    from medpipe.params.sections import TrainParams

    allowed = typing.get_args(typing.get_type_hints(TrainParams)["model"])
    assert sorted(allowed) == sorted(architectures.MODELS)
    assert sorted(architectures.TARGET_LAYERS) == sorted(architectures.MODELS)

