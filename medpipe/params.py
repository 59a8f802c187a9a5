"""Typed, strict params: one frozen dataclass per ``params.yaml`` section.

Every key must be present in ``params.yaml`` (no silent defaults that DVC cannot see),
every value must have the declared type, and unknown keys are errors that name the key,
the stage and, where there is one, the closest valid spelling.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from medpipe import PipelineError

# Sections that belong to pipeline stages. Other top-level sections are yours: no stage
# reads them, so changing them reruns nothing (see docs/pipeline.md).
STAGE_SECTIONS = ("data", "prepare", "train", "augment", "evaluate")


Rule = Callable[[Any], "str | None"]


def param(default: Any, rule: Rule | None = None) -> Any:
    """A field of a params section: its default (the value of the committed params.yaml,
    which ``medpipe recipe`` starts from; the stages themselves still need every key in
    params.yaml) and the rule its value must pass after its type is checked: ``rule``
    returns what is wrong ("must be at least 1") or None."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default),
                                 metadata={"check": rule})
    return dataclasses.field(default=default, metadata={"check": rule})


def between(low: float, high: float, unit: str = "") -> Rule:
    """``low <= value <= high`` (``unit``, e.g. " px", follows the bounds in the message)."""
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}{unit}"


def at_least(low: float, what: str = "") -> Rule:
    """``value >= low``; ``what`` names the smallest value's meaning, e.g. "no intervals"."""
    text = f"must be {low} ({what}) or more" if what else f"must be at least {low}"
    return lambda v: None if v >= low else text


def positive(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be non-negative"


def unit_interval(v: float) -> str | None:
    """A fraction in [0, 1): a decay, a dropout rate, a smoothing."""
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def probability(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "is a probability"


def open_fraction(v: float) -> str | None:
    return None if 0.0 < v < 1.0 else "must be between 0 and 1"


# numpy, scikit-learn and torch all accept seeds in [0, 2**32 - 1].
SEED = between(0, 2**32 - 1)
# Classification models are trained at 28-1024 px; at 4096 px one image is already 16 MiB
# in the store (48 MiB in colour) and four times that as float32 in a batch. A larger
# value is a slip (an extra digit) that would fail only later, out of memory or disk. 8:
# the small CNN's two 2x2 pools leave 2x2 features.
IMAGE_SIZE = between(8, 4096, " px")


def zoom_range(v: list[float]) -> str | None:
    ok = len(v) == 2 and 0 < v[0] <= v[1]
    return None if ok else "must be [min, max] with 0 < min <= max"


def threshold_rule(v: Any) -> str | None:
    ok = isinstance(v, str) or 0.0 < v < 1.0
    return None if ok else "must be youden, target_sensitivity or a probability in (0, 1)"


def sensitivity_target(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "must be in (0, 1]"


@dataclass(frozen=True)
class DataParams:
    """``data``: where the images come from (read by the download stage)."""

    # synthetic: generated chest-radiograph-like images; medmnist: a 2D MedMNIST subset;
    # folder: one subfolder per class; csv: a manifest of image paths and labels
    source: Literal["synthetic", "medmnist", "folder", "csv"] = param("synthetic")
    name: str | None = param(None)  # medmnist: the subset; csv: the manifest file
    url: str | None = param(None)  # medmnist: mirror of the file; folder/csv: an archive
    md5: str | None = param(None)  # medmnist: checksum of that file; null: the official one
    sha256: str | None = param(None)  # folder/csv: SHA-256 of the archive at url
    # folder/csv without url: the dataset folder. Always a path: dvc.yaml lists it as a
    # dependency of the download stage, so the other sources leave the placeholder.
    path: str = param("data/external")
    seed: int = param(0, SEED)  # synthetic: generator seed
    # synthetic: side of the generated images, px; medmnist: 28, 64, 128 or 224. Not named
    # `size`: DVC leaves keys named `size` or `nfiles` out of its run-cache key (they are
    # file metadata there), so a change of such a param would restore a stale output
    # (iterative/dvc#10296).
    resolution: int = param(128, at_least(16))
    n_per_class: int = param(1000, at_least(1))  # synthetic: images generated per class
    # synthetic: subset of medpipe.data.phantoms.CLASSES, in label order
    classes: list[str] = param(["normal", "opacity"])


@dataclass(frozen=True)
class PrepareParams:
    """``prepare``: split, resize, channels, intensity statistics."""

    seed: int = param(0, SEED)  # split seed
    val_fraction: float = param(0.15, open_fraction)  # of all images, stratified by class
    test_fraction: float = param(0.15, open_fraction)  # of all images, stratified by class
    image_size: int = param(64, IMAGE_SIZE)  # images are resized to image_size x image_size
    channels: Literal[1, 3] = param(1)  # 1: grayscale; 3: RGB (grayscale replicated)
    # an unreadable image file: stop, or skip and record it
    on_error: Literal["fail", "skip"] = param("fail")
    # processes decoding image files (folder/csv sources); 0: all cores
    workers: int = param(0, at_least(0, "all cores"))

    def check(self) -> str | None:
        if self.val_fraction + self.test_fraction >= 1.0:
            return "'prepare.val_fraction' + 'prepare.test_fraction' must be below 1"
        return None


@dataclass(frozen=True)
class TrainParams:
    """``train``: model, optimiser and loop."""

    # medpipe.models.architectures.MODELS builds each of these (a test keeps them equal)
    model: Literal["cnn", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                   "resnet18", "resnet50", "efficientnet_b0", "densenet121"] = param("cnn")
    width_mult: float = param(1.0, positive)  # mobilenet_v2 / mobilenet_v3 width multiplier
    small_input: bool = param(False)  # 3x3 stride-1 stem, no early max-pool (28-64 px)
    pretrained: bool = param(False)  # ImageNet weights (the pretrained stage fetches them)
    freeze_backbone: bool = param(False)  # train only the Dropout+Linear head
    dropout: float = param(0.2, unit_interval)  # dropout before the last linear layer
    optimizer: Literal["sgd", "adam", "adamw"] = param("adam")
    lr: float = param(0.003, positive)  # peak learning rate
    momentum: float = param(0.9, unit_interval)  # SGD only
    weight_decay: float = param(0.0, non_negative)
    schedule: Literal["constant", "step", "cosine", "onecycle"] = param("onecycle")
    # linear warm-up from lr/25 (constant, step, cosine); onecycle's rise
    warmup_epochs: float = param(3, non_negative)  # 3, not 3.0: as params.yaml spells it
    step_epochs: int = param(10, at_least(1))  # step schedule: lr x 0.1 every step_epochs
    label_smoothing: float = param(0.0, unit_interval)
    # per-step decay of an exponential moving average of the weights; 0: off
    ema: float = param(0.0, unit_interval)
    # class-weighted loss or balanced sampling
    balance: Literal["none", "loss", "sampler"] = param("none")
    batch_size: int = param(64, at_least(1))
    epochs: int = param(30, at_least(1))
    # early stopping after this many epochs without improvement; 0: off
    patience: int = param(0, non_negative)
    # best epoch kept by this
    monitor: Literal["val_auc", "val_accuracy", "val_loss"] = param("val_auc")
    seed: int = param(0, SEED)
    device: str = param("auto")  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast on CUDA, fp32 on CPU
    precision: Literal["auto", "fp32", "bf16"] = param("auto")
    channels_last: bool | Literal["auto"] = param("auto")  # auto: NHWC on CUDA and CPU
    compile: bool = param(False)  # torch.compile the model
    deterministic: bool = param(True)  # deterministic kernels (always on CPU; slower on GPU)
    # data-parallel processes on this machine (DDP under torchrun); 1: none
    nproc: int = param(1, at_least(1))

    def check(self) -> str | None:
        if self.batch_size % self.nproc:
            return (f"'train.batch_size' must be divisible by train.nproc ({self.nproc}), "
                    f"got {self.batch_size}")
        return None


@dataclass(frozen=True)
class AugmentParams:
    """``augment``: random augmentation of training batches (read by the train stage).

    Geometry and intensity each apply to an image with their own probability; ranges
    of 0 switch a transform off. Flips are off by default: left and right matter in a
    chest radiograph (the heart is on the left).
    """

    affine_p: float = param(0.0, probability)  # probability of rotation/translation/zoom
    rotation: float = param(10.0, non_negative)  # degrees, uniform in [-rotation, rotation]
    translate: float = param(0.05, non_negative)  # fraction of the side, uniform in [-t, t]
    scale: list[float] = param([0.95, 1.1], zoom_range)  # [min, max] zoom; 1.0 is none
    hflip_p: float = param(0.0, probability)  # probability of a left-right flip
    vflip_p: float = param(0.0, probability)  # probability of an up-down flip
    intensity_p: float = param(0.0, probability)  # probability of brightness/contrast/gamma
    brightness: float = param(0.05, non_negative)  # additive shift, uniform in [-b, b]
    contrast: float = param(0.1, unit_interval)  # factor around the mean, in [1-c, 1+c]
    gamma: float = param(0.1, non_negative)  # exponent exp(u), u uniform in [-gamma, gamma]
    noise_p: float = param(0.0, probability)  # probability of Gaussian noise
    noise_std: float = param(0.02, non_negative)  # its standard deviation, in [0, noise_std]


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate``: which split is scored and how."""

    split: Literal["test", "val"] = param("test")
    batch_size: int = param(256, at_least(1))
    device: str = param("auto")  # auto | cpu | cuda | cuda:N
    # Binary tasks: how the decision threshold on the positive-class probability is chosen
    # on the validation split (then applied unchanged to ``split``): youden (max
    # sensitivity + specificity - 1), target_sensitivity (the highest threshold reaching
    # ``target_sensitivity``), or a fixed probability such as 0.5. Multi-class: argmax.
    threshold: Literal["youden", "target_sensitivity"] | float = param("youden",
                                                                        threshold_rule)
    # read only when threshold: target_sensitivity
    target_sensitivity: float = param(0.9, sensitivity_target)
    # resamples for the 95% confidence intervals; 0: no intervals
    bootstrap: int = param(1000, at_least(0, "no intervals"))
    seed: int = param(0, SEED)  # bootstrap seed; also draws the Grad-CAM sample
    # equal-width probability bins for ECE and the reliability diagram
    calibration_bins: int = param(10, at_least(1))
    # Grad-CAM heat maps of this many test images, right and wrong; 0: none
    gradcam: int = param(8, at_least(0, "no heat maps"))
    # Test-time augmentation: the probabilities averaged over the image and its flips
    # (none; hflip: left-right; flips: left-right, up-down and both), on val and test alike.
    tta: Literal["none", "hflip", "flips"] = param("none")


# Keys that were renamed: the old spelling gets an error that names the new one.
RENAMED: dict[str, str] = {"data.size": "data.resolution"}

# DVC drops keys with these names, at any depth, from the lock entry it hashes for its run
# cache, so a param with one of these names would not rerun its stage (iterative/dvc#10296).
DVC_RESERVED_KEYS = ("size", "nfiles")

SECTIONS: dict[str, type] = {
    "data": DataParams,
    "prepare": PrepareParams,
    "train": TrainParams,
    "augment": AugmentParams,
    "evaluate": EvaluateParams,
}


def load_yaml(path: Path) -> dict[str, Any]:
    """Read ``params.yaml`` as a mapping; a missing or malformed file is a PipelineError."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if doc is None or doc == {}:
        raise PipelineError(
            f"{path}: is empty; it needs the sections {', '.join(STAGE_SECTIONS)} with every "
            f"key set (restore it with 'git checkout {path.name}')")
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, got {type(doc).__name__}")
    return doc


def load_section(path: Path | str, section: str, stage: str) -> Any:
    """Load and validate one section of ``params.yaml`` for ``stage``."""
    path = Path(path)
    doc = load_yaml(path)
    _check_top_level(doc, path, stage)
    if section not in doc:
        raise PipelineError(f"{path}: section '{section}' is missing (stage {stage})")
    return parse_section(section, doc[section], stage=stage, where=str(path))


def parse_section(section: str, values: Any, *, stage: str, where: str = "params.yaml") -> Any:
    """Build the dataclass of ``section`` from a mapping, checking keys and types."""
    cls = SECTIONS[section]
    if not isinstance(values, dict):
        raise PipelineError(
            f"{where}: '{section}' must be a mapping of keys, got {_show(values)} (stage {stage})"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if f"{section}.{key}" in RENAMED:
            raise PipelineError(f"{where}: '{section}.{key}' is now "
                                f"'{RENAMED[f'{section}.{key}']}'; rename it (stage {stage})")
        if key not in fields:
            hint = _did_you_mean(str(key), fields)
            raise PipelineError(f"{where}: unknown key '{section}.{key}'{hint} (stage {stage})")
    missing = [name for name in fields if name not in values]
    if missing:
        raise PipelineError(
            f"{where}: missing key '{section}.{missing[0]}' (stage {stage}); "
            f"every key of '{section}' must be set"
        )
    parsed = {}
    for name in fields:
        ok, value = _coerce(values[name], hints[name])
        if not ok:
            choices = [c for c in typing.get_args(hints[name]) if isinstance(c, str)]
            hint = _did_you_mean(values[name], choices) if isinstance(values[name], str) else ""
            raise PipelineError(
                f"{where}: '{section}.{name}' must be {_describe(hints[name])}, "
                f"got {_show(values[name])}{hint} (stage {stage})"
            )
        parsed[name] = value
    return validate(cls(**parsed), stage=stage, where=where)


def validate(cfg: Any, *, stage: str, where: str = "params.yaml") -> Any:
    """Check ``cfg`` (a section's dataclass) against the rules declared beside its fields
    and its ``check`` across fields; return it, or raise a one-line PipelineError."""
    section = next(name for name, cls in SECTIONS.items() if isinstance(cfg, cls))
    for f in dataclasses.fields(cfg):
        rule = f.metadata.get("check")
        value = getattr(cfg, f.name)
        problem = rule(value) if rule else None
        if problem:
            raise PipelineError(f"{where}: '{section}.{f.name}' {problem}, got {value!r} "
                                f"(stage {stage})")
    problem = cfg.check() if hasattr(cfg, "check") else None
    if problem:
        raise PipelineError(f"{where}: {problem} (stage {stage})")
    return cfg


def defaults(section: str) -> dict[str, Any]:
    """The default value of every key of ``section``: the committed params.yaml's."""
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING
                     else f.default) for f in dataclasses.fields(SECTIONS[section])}


def _check_top_level(doc: dict, path: Path, stage: str) -> None:
    # A near-miss of a stage section ('trian') is almost surely a typo: refuse it. Any
    # other extra section is the user's own and no stage reads it.
    for key in doc:
        if key in SECTIONS:
            continue
        close = difflib.get_close_matches(str(key), SECTIONS, n=1, cutoff=0.75)
        if close:
            raise PipelineError(
                f"{path}: unknown section '{key}' (did you mean '{close[0]}'?) (stage {stage})"
            )


def _did_you_mean(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Return (ok, value) for ``value`` checked against a type hint. Ints pass as floats;
    bools never pass as numbers (YAML's ``yes`` is not a learning rate)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        # 1 == True in Python: compare types too, so `channels: true` is refused.
        ok = any(value == c and type(value) is type(c) for c in typing.get_args(hint))
        return ok, value
    if origin in (list,):
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, v = _coerce(v, item)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, v = _coerce(value, option)
            if ok:
                return True, v
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported type hint {hint!r}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def require(condition: bool, section: str, key: str, message: str, stage: str) -> None:
    """Raise a one-line PipelineError about ``section.key`` unless ``condition`` holds."""
    if not condition:
        raise PipelineError(f"params.yaml: '{section}.{key}' {message} (stage {stage})")
