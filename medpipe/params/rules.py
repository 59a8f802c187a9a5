"""The rules a param's value must pass after its type, declared beside each field of
:mod:`medpipe.params.sections` with :func:`param`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

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


def distinct_names(v: list[str]) -> str | None:
    """A list of column names, each named once."""
    if any(not name for name in v):
        return "must be column names (an empty name is given)"
    twice = sorted({name for name in v if v.count(name) > 1})
    return f"names {', '.join(twice)} twice" if twice else None


# The columns of the store's own manifest (medpipe.data.store): label and class are the
# truth being scored (one class per group would leave nothing to rank; the figures per
# class are in per_class already), split has one value in the scored split, and index and
# source_id one per case. None of them cuts the cases into subgroups.
STORE_COLUMNS = ("split", "index", "label", "class", "source_id")


def group_columns(v: list[str]) -> str | None:
    """``evaluate.groups``: distinct columns of the data's own, none of the store's."""
    problem = distinct_names(v)
    if problem:
        return problem
    own = [name for name in v if name in STORE_COLUMNS]
    if own:
        return (f"names '{own[0]}', a column of the store itself, not an attribute of the "
                "cases (per-class figures are in per_class)")
    return None


def class_names(v: list[str] | None) -> str | None:
    """``data.classes``: null, or at least two distinct, non-empty class names."""
    if v is None:
        return None
    twice = sorted({name for name in v if v.count(name) > 1})
    if twice:
        return f"names class '{twice[0]}' twice; each class is listed once"
    if any(not name for name in v):
        return "must list class names (an empty name is given)"
    if len(v) < 2:
        return "must list at least 2 distinct classes, or be null"
    return None


def folder_classes(v: dict[str, str] | None) -> str | None:
    """``data.class_folders``: null, or folder names (no '/') mapped to class names."""
    if v is None:
        return None
    if any(not folder or "/" in folder or "\\" in folder for folder in v):
        return "must map folder names (not paths) to class names"
    if any(not name for name in v.values()):
        return "must map each folder to a class name (an empty name is given)"
    return None


def one_group_pattern(v: str | None) -> str | None:
    """``data.patient_pattern``: null, or a regular expression with exactly one group."""
    if v is None:
        return None
    try:
        groups = re.compile(v).groups
    except re.error as e:
        return f"is not a regular expression ({e})"
    return None if groups == 1 else f"must have exactly one group, (...), not {groups}"


DICOM_FRAMES = ("middle", "first", "refuse")


def dicom_frame(v) -> str | None:
    """Which frame of a multi-frame DICOM file: middle, first, refuse, or a number from 1."""
    ok = v in DICOM_FRAMES if isinstance(v, str) else (
        isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    return None if ok else "must be middle, first, refuse or a frame number from 1"
