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
# reads them, so changing them reruns nothing (see README, "What reruns when").
STAGE_SECTIONS = ("data", "prepare", "train", "augment", "evaluate")


def checked(rule: Callable[[Any], str | None]) -> Any:
    """A dataclass field whose value ``rule`` checks after its type: ``rule`` returns what
    is wrong ("must be at least 1") or None."""
    return dataclasses.field(metadata={"check": rule})


def between(low: float, high: float) -> Callable[[Any], str | None]:
    """A rule: ``low <= value <= high``."""
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


# numpy, scikit-learn and torch all accept seeds in [0, 2**32 - 1].
SEED = between(0, 2**32 - 1)


@dataclass(frozen=True)
class DataParams:
    """``data``: where the images come from (read by the download stage)."""

    # synthetic: generated chest-radiograph-like images; medmnist: a 2D MedMNIST subset;
    # folder: one subfolder per class; csv: a manifest of image paths and labels
    source: Literal["synthetic", "medmnist", "folder", "csv"]
    name: str | None  # medmnist: the subset; csv: the manifest file (in path or archive)
    url: str | None  # medmnist: mirror of the file; folder/csv: a .zip/.tar.gz archive
    md5: str | None  # medmnist: checksum of that file; null: the official one
    sha256: str | None  # folder/csv: SHA-256 of the archive at url (required with url)
    # folder/csv without url: the dataset folder. Always a path: dvc.yaml lists it as a
    # dependency of the download stage, so the other sources leave the placeholder.
    path: str
    seed: int = checked(SEED)  # synthetic: generator seed
    # synthetic: side of the generated images, px; medmnist: 28, 64, 128 or 224. Not named
    # `size`: DVC leaves keys named `size` or `nfiles` out of its run-cache key (they are
    # file metadata there), so a change of such a param would restore a stale output
    # (iterative/dvc#10296).
    resolution: int
    n_per_class: int  # synthetic: images generated per class
    classes: list[str]  # synthetic: subset of medpipe.synthetic.CLASSES, in label order


@dataclass(frozen=True)
class PrepareParams:
    """``prepare``: split, resize, channels, intensity statistics."""

    seed: int = checked(SEED)  # split seed
    val_fraction: float  # of all images, stratified by class
    test_fraction: float  # of all images, stratified by class
    image_size: int  # images are resized to image_size x image_size
    channels: Literal[1, 3]  # 1: grayscale; 3: RGB (grayscale replicated)
    on_error: Literal["fail", "skip"]  # an unreadable image file: stop, or skip and record it
    workers: int  # processes decoding image files (folder/csv sources); 0: all cores


@dataclass(frozen=True)
class TrainParams:
    """``train``: model, optimiser and loop."""

    model: str  # one of medpipe.models.MODELS
    width_mult: float  # mobilenet_v2 / mobilenet_v3 width multiplier
    small_input: bool  # 3x3 stride-1 stem, no early max-pool (for 28-64 px images)
    pretrained: bool  # ImageNet weights (the pretrained stage fetches the file)
    freeze_backbone: bool  # train only the Dropout+Linear head
    dropout: float  # dropout before the last linear layer
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float  # peak learning rate
    momentum: float  # SGD only
    weight_decay: float
    schedule: Literal["constant", "step", "cosine", "onecycle"]
    warmup_epochs: float  # linear warm-up from lr/25 (constant, step, cosine); onecycle's rise
    step_epochs: int  # step schedule: lr x 0.1 every step_epochs epochs
    label_smoothing: float
    ema: float  # per-step decay of an exponential moving average of the weights; 0: off
    balance: Literal["none", "loss", "sampler"]  # class-weighted loss or balanced sampling
    batch_size: int
    epochs: int
    patience: int  # early stopping after this many epochs without improvement; 0: off
    monitor: Literal["val_auc", "val_accuracy", "val_loss"]  # best epoch kept by this
    seed: int = checked(SEED)
    device: str  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"]  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool | Literal["auto"]  # auto: on CUDA only
    compile: bool  # torch.compile the model
    deterministic: bool  # deterministic kernels (always on CPU; slower on GPU)
    nproc: int  # data-parallel processes on this machine (DDP under torchrun); 1: none


@dataclass(frozen=True)
class AugmentParams:
    """``augment``: random augmentation of training batches (read by the train stage).

    Geometry and intensity each apply to an image with their own probability; ranges
    of 0 switch a transform off. Flips are off by default: left and right matter in a
    chest radiograph (the heart is on the left).
    """

    affine_p: float  # probability of the rotation/translation/zoom transform
    rotation: float  # degrees, uniform in [-rotation, rotation]
    translate: float  # fraction of the image side, each axis, uniform in [-t, t]
    scale: list[float]  # [min, max] zoom; 1.0 is none, above 1 zooms in
    hflip_p: float  # probability of a left-right flip
    vflip_p: float  # probability of an up-down flip
    intensity_p: float  # probability of the brightness/contrast/gamma change
    brightness: float  # additive shift, uniform in [-b, b] (intensities are 0..1)
    contrast: float  # factor around the image mean, uniform in [1-c, 1+c]
    gamma: float  # exponent exp(u), u uniform in [-gamma, gamma]
    noise_p: float  # probability of Gaussian noise
    noise_std: float  # its standard deviation, uniform in [0, noise_std]


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate``: which split is scored and how."""

    split: Literal["test", "val"]
    batch_size: int
    device: str  # auto | cpu | cuda | cuda:N
    # Binary tasks: how the decision threshold on the positive-class probability is chosen
    # on the validation split (then applied unchanged to ``split``): youden (max
    # sensitivity + specificity - 1), target_sensitivity (the highest threshold reaching
    # ``target_sensitivity``), or a fixed probability such as 0.5. Multi-class: argmax.
    threshold: Literal["youden", "target_sensitivity"] | float
    target_sensitivity: float  # read only when threshold: target_sensitivity
    bootstrap: int  # resamples for the 95% confidence intervals; 0: no intervals
    seed: int = checked(SEED)  # bootstrap seed; also draws the Grad-CAM sample
    calibration_bins: int  # equal-width probability bins for ECE and the reliability diagram
    gradcam: int  # Grad-CAM heat maps of this many test images, right and wrong; 0: none
    # Test-time augmentation: the probabilities averaged over the image and its flips
    # (none; hflip: left-right; flips: left-right, up-down and both), on val and test alike.
    tta: Literal["none", "hflip", "flips"]


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
            raise PipelineError(
                f"{where}: '{section}.{name}' must be {_describe(hints[name])}, "
                f"got {_show(values[name])} (stage {stage})"
            )
        rule = fields[name].metadata.get("check")
        problem = rule(value) if rule else None
        if problem:
            raise PipelineError(f"{where}: '{section}.{name}' {problem}, got {_show(value)} "
                                f"(stage {stage})")
        parsed[name] = value
    return cls(**parsed)


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
