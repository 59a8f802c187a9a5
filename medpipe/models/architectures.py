"""Model builders: the small CNN and the torchvision models, adapted to the data.

Every model is wrapped in :class:`Classifier`, which takes images with intensities in
[0, 1] and normalises them with the train-split statistics it carries as buffers, so the
saved model holds its own preprocessing and prediction cannot drift from training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medpipe import PipelineError, error_line

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (each conv + ReLU + 2x2 max-pool), then two fully connected
    layers. The flattened size is derived from ``image_size``, so any size works."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4  # two 2x2 pools
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(32 * side * side, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, classes)
        return self.classifier(self.features(x))


def _build_cnn(arch: dict, weights: dict | None) -> tuple[nn.Module, str]:
    if weights is not None:
        raise PipelineError("params.yaml: 'train.pretrained' is not available for model 'cnn'")
    if arch["image_size"] < 4:
        raise PipelineError("model 'cnn' needs images of at least 4 px")
    net = SmallCNN(arch["in_channels"], arch["num_classes"], arch["image_size"], arch["dropout"])
    return net, "classifier"


@dataclass(frozen=True)
class TorchvisionSpec:
    """Where the parts of a torchvision classifier sit, as attribute paths."""

    weights: str  # weights enum entry in torchvision.models, e.g. "ResNet18_Weights.DEFAULT"
    stem: str  # the first convolution
    pool: str | None  # the max-pool right after the stem, if any
    head: str  # the child module replaced by the new classification head
    width: bool = False  # takes width_mult


TORCHVISION: dict[str, TorchvisionSpec] = {
    "mobilenet_v2": TorchvisionSpec("MobileNet_V2_Weights.IMAGENET1K_V1", "features.0.0", None,
                                    "classifier", width=True),
    "mobilenet_v3_small": TorchvisionSpec("MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                                          "features.0.0", None, "classifier", width=True),
    "mobilenet_v3_large": TorchvisionSpec("MobileNet_V3_Large_Weights.IMAGENET1K_V1",
                                          "features.0.0", None, "classifier", width=True),
    "resnet18": TorchvisionSpec("ResNet18_Weights.IMAGENET1K_V1", "conv1", "maxpool", "fc"),
    "resnet50": TorchvisionSpec("ResNet50_Weights.IMAGENET1K_V2", "conv1", "maxpool", "fc"),
    "efficientnet_b0": TorchvisionSpec("EfficientNet_B0_Weights.IMAGENET1K_V1", "features.0.0",
                                       None, "classifier"),
    "densenet121": TorchvisionSpec("DenseNet121_Weights.IMAGENET1K_V1", "features.conv0",
                                   "features.pool0", "classifier"),
}


def _build_torchvision(name: str, arch: dict, weights: dict | None) -> tuple[nn.Module, str]:
    import torchvision  # here, not at the top: its import costs seconds the CNN never needs

    spec = TORCHVISION[name]
    width = arch["width_mult"]
    kwargs = {"width_mult": width} if spec.width else {}
    if width != 1.0 and not spec.width:
        log.warning("train.width_mult %s is ignored: %s has no width multiplier", width, name)
    pretrained = weights is not None
    if pretrained and spec.width and width != 1.0:
        raise PipelineError(f"params.yaml: ImageNet weights exist only for 'train.width_mult: "
                            f"1.0' of {name}, got {width} (stage train)")
    net = getattr(torchvision.models, name)(weights=None, **kwargs)
    if pretrained:
        try:
            net.load_state_dict(weights)
        except RuntimeError as e:
            raise PipelineError(f"the ImageNet weights do not fit {name} "
                                f"({error_line(e)}); run 'dvc repro pretrained'") from None

    stem = net.get_submodule(spec.stem)
    small = arch.get("small_input", False)
    if arch["in_channels"] != stem.in_channels or small:
        new = adapt_first_conv(stem, arch["in_channels"], pretrained)
        if small:  # keep full resolution at the start, as the 28 px MedMNIST ResNets do
            new = _small_stem(new)
        net.set_submodule(spec.stem, new)
    if small and spec.pool is not None:
        net.set_submodule(spec.pool, nn.Identity())
    net.set_submodule(spec.head, _new_head(net.get_submodule(spec.head), arch))
    return net, spec.head.split(".")[0]


def _small_stem(conv: nn.Conv2d) -> nn.Conv2d:
    """The same convolution with a 3x3 kernel, stride 1 (a pretrained 7x7 kernel keeps its
    centre 3x3; a 3x3 one is unchanged)."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    with torch.no_grad():
        kh, kw = conv.kernel_size
        top, left = (kh - 3) // 2, (kw - 3) // 2
        new.weight.copy_(conv.weight[:, :, top : top + 3, left : left + 3])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _new_head(old: nn.Module, arch: dict) -> nn.Module:
    """Dropout + Linear to ``num_classes``, replacing the last Linear of ``old``."""
    if isinstance(old, nn.Linear):
        return nn.Sequential(nn.Dropout(arch["dropout"]),
                             nn.Linear(old.in_features, arch["num_classes"]))
    layers = list(old.children())
    last = max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    for m in layers:  # the torchvision heads' own dropout takes the params' rate
        if isinstance(m, nn.Dropout):
            m.p = arch["dropout"]
    layers[last] = nn.Linear(layers[last].in_features, arch["num_classes"])
    if not any(isinstance(m, nn.Dropout) for m in layers[:last]):
        layers.insert(last, nn.Dropout(arch["dropout"]))
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[[dict, dict | None], tuple[nn.Module, str]]] = {
    "cnn": _build_cnn,
    **{name: (lambda arch, weights, _n=name: _build_torchvision(_n, arch, weights))
       for name in TORCHVISION},
}


# Grad-CAM's layer per architecture, as a path inside the network (Classifier.net): the
# last convolutional block, whose feature map is the finest that the head still reads.
# Their strides: cnn 4, the others 32 (with small_input: resnet and densenet 8, mobilenet
# and efficientnet 16), so at 64 px the maps are 16x16 (cnn) and 2x2 (the others).
TARGET_LAYERS: dict[str, str] = {
    "cnn": "features",  # after the second conv block's max-pool
    "mobilenet_v2": "features",  # the last 1x1 conv + BN + ReLU6 (1280 channels)
    "mobilenet_v3_small": "features",  # the last 1x1 conv + BN + Hardswish
    "mobilenet_v3_large": "features",
    "resnet18": "layer4",
    "resnet50": "layer4",
    "efficientnet_b0": "features",  # the last 1x1 conv + BN + SiLU
    "densenet121": "features",  # ends at norm5; the ReLU after it is functional, in place
}


def check_model_name(name: str) -> None:
    if name not in MODELS:
        raise PipelineError(
            f"params.yaml: unknown model 'train.model: {name}'; valid: {', '.join(MODELS)} "
            "(stage train)"
        )


def adapt_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs.

    With pretrained RGB weights and one input channel, the new kernel is the sum of the
    three RGB kernels: exactly what the network computes on a grey image replicated to
    three channels, at a third of the cost.
    """
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None,
    )
    if pretrained:
        with torch.no_grad():
            w = conv.weight
            if in_channels == conv.in_channels:
                new.weight.copy_(w)
            elif in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:  # spread the RGB mean over the channels, keeping the response scale
                new.weight.copy_(w.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1)
                                 * (3.0 / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


class Classifier(nn.Module):
    """Normalises [0, 1] images with fixed statistics, then runs ``net``.

    With ``head`` given (the name of a child of ``net``), every other child is frozen:
    kept in eval mode and out of the optimiser, so the batch-norm statistics of a
    frozen backbone do not drift either.
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float],
                 head: str | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        # A tuple, not an attribute: an nn.Module attribute would register the backbone a
        # second time and save its weights twice under other names.
        self._frozen = tuple(m for name, m in net.named_children()
                             if head is not None and name != head)
        for module in self._frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def to_input_side(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, C, side, side) at ``input_size`` (bilinear, antialiased
        when shrinking); ``x`` itself when there is no such side or it is at it already.
        Training applies it before augmentation, so the augmented images are drawn at
        the side the network sees."""
        side = self.input_size
        if side is None or x.shape[-2:] == (side, side):
            return x
        return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                             antialias=side < x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) in [0, 1]
        return self.net((x - self.mean) / self.std)


def build_model(arch: dict, *, weights: dict[str, torch.Tensor] | None = None,
                freeze_backbone: bool = False) -> Classifier:
    """Build the model described by ``arch`` (see :func:`make_arch`), starting from the
    ImageNet state dict ``weights`` if given (see ``medpipe.models.imagenet``)."""
    check_model_name(arch["name"])
    if "input_size" in arch:
        raise PipelineError(f"the model file's architecture resizes its {arch['image_size']} "
                            f"px input to {arch['input_size']} px inside the model, which "
                            "medpipe no longer does (the store is prepared at the planned "
                            "side); retrain it")
    net, head = MODELS[arch["name"]](arch, weights)
    return Classifier(net, arch["mean"], arch["std"], head if freeze_backbone else None)


def make_arch(cfg, stats: dict) -> dict:
    """The plain-data description that rebuilds a model: from train params + store stats."""
    return {
        "name": cfg.model,
        "in_channels": stats["channels"],
        "num_classes": len(stats["classes"]),
        "image_size": stats["image_size"],
        "width_mult": cfg.width_mult,
        "small_input": cfg.small_input,
        "dropout": cfg.dropout,
        "mean": stats["mean"],
        "std": stats["std"],
    }


def target_layer(model: Classifier, name: str) -> nn.Module:
    """The module whose output Grad-CAM explains, for a model of architecture ``name``."""
    if name not in TARGET_LAYERS:
        raise PipelineError(f"no Grad-CAM target layer for model '{name}'")
    return model.net.get_submodule(TARGET_LAYERS[name])
