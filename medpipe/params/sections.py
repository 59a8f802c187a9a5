"""One frozen dataclass per ``params.yaml`` section: every key, its default (the committed
params.yaml's) and the rule its value must pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medpipe.params.rules import (
    IMAGE_SIZE,
    SEED,
    at_least,
    between,
    class_names,
    dicom_frame,
    folder_classes,
    group_columns,
    non_negative,
    one_group_pattern,
    open_fraction,
    param,
    positive,
    probability,
    sensitivity_target,
    threshold_rule,
    unit_interval,
    zoom_range,
)

# Sections that belong to pipeline stages. Other top-level sections are yours: no stage
# reads them, so changing them reruns nothing (see docs/pipeline.md).
STAGE_SECTIONS = ("data", "prepare", "plan", "train", "augment", "evaluate")


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
    # The classes in label order; with two, the second is the positive class. synthetic:
    # the classes generated, from medpipe.data.phantoms.CLASSES; other sources: every class
    # of the data, reordered. null: the source's own order (folder/csv: sorted names;
    # medmnist: the official labels; synthetic: phantoms.DEFAULT_CLASSES, normal and
    # opacity), so that no source needs the key set.
    classes: list[str] | None = param(None, class_names)
    # folder: class names of class folders, {folder name: class name}, so that folders
    # named differently in two splits (or two folders in one) are one class; folders not
    # named keep their own name. null: the folder names
    class_folders: dict[str, str] | None = param(None, folder_classes)
    # folder/csv: a regular expression with one group, searched in each image's file name;
    # the group is its patient id, so the split keeps a patient's images together. null: off
    patient_pattern: str | None = param(None, one_group_pattern)


@dataclass(frozen=True)
class PrepareParams:
    """``prepare``: split, resize, channels, intensity statistics."""

    seed: int = param(0, SEED)  # split seed
    val_fraction: float = param(0.15, open_fraction)  # of all images, stratified by class
    test_fraction: float = param(0.15, open_fraction)  # of all images, stratified by class
    image_size: int = param(64, IMAGE_SIZE)  # images are resized to image_size x image_size
    # auto: 1 for grey data, 3 for colour (see medpipe.data.channels); 1: grey (colour
    # converted by BT.601 luma); 3: RGB (grey replicated)
    channels: Literal["auto", 1, 3] = param("auto")
    # an unreadable image file: stop, or skip and record it
    on_error: Literal["fail", "skip"] = param("fail")
    # the same or a near-identical image in two splits, or under two labels: log it (warn),
    # stop (fail), or keep one copy, the train one where there is one (drop)
    duplicates: Literal["warn", "fail", "drop"] = param("warn")
    # processes decoding image files (folder/csv sources); 0: all cores
    workers: int = param(0, at_least(0, "all cores"))
    # multi-frame DICOM: the frame used (middle, first, or a number from 1), or refuse
    dicom_frame: Literal["middle", "first", "refuse"] | int = param("middle", dicom_frame)
    # K-fold cross-validation over train + val (the test split stays out): K >= 2 folds,
    # stratified by class and grouped by patient, a model each; 0 or 1: off
    folds: int = param(0, between(0, 20))

    def check(self) -> str | None:
        if self.val_fraction + self.test_fraction >= 1.0:
            return "'prepare.val_fraction' + 'prepare.test_fraction' must be below 1"
        return None


@dataclass(frozen=True)
class PlanParams:
    """``plan``: the configuration planned from the store's fingerprint and a compute
    budget (read by the plan stage; see docs/planning.md)."""

    # minutes for the plan's trials and the winner's training; null: no plan, train
    # follows params.yaml as set
    budget_minutes: float | None = param(
        None, lambda v: None if v is None or v > 0 else "must be positive or null")
    timed_steps: int = param(10, at_least(1))  # training steps timed per candidate model


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
    monitor: Literal["val_auc", "val_accuracy", "val_balanced_accuracy", "val_loss"] = param(
        "val_auc")
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
    # Subgroup performance: columns of the CSV manifest (data.source: csv), e.g. [sex,
    # site]; each value of each column is scored on its own, with bootstrap intervals.
    groups: list[str] = param([], group_columns)
    # a value with fewer cases is reported and marked, and left out of the largest gap
    min_group_cases: int = param(20, at_least(1))


# Keys that were renamed: the old spelling gets an error that names the new one.
RENAMED: dict[str, str] = {"data.size": "data.resolution"}

# DVC drops keys with these names, at any depth, from the lock entry it hashes for its run
# cache, so a param with one of these names would not rerun its stage (iterative/dvc#10296).
DVC_RESERVED_KEYS = ("size", "nfiles")

SECTIONS: dict[str, type] = {
    "data": DataParams,
    "prepare": PrepareParams,
    "plan": PlanParams,
    "train": TrainParams,
    "augment": AugmentParams,
    "evaluate": EvaluateParams,
}
