"""The plan as a recipe file, and the rule by which the train stage applies it.

The plan stage writes ``data/plan.yaml`` in the format of ``recipes/*.yaml`` (sections
``prepare``, ``train``, ``augment``), with an empty mapping when there is no plan. The
train stage calls :func:`apply`: **the plan fills every planned key that params.yaml
leaves at its default; a key you changed (by hand or ``dvc exp run -S``) wins.** The
planned input side (``prepare.image_size``) is applied by resizing inside the model,
unless you chose the model yourself (``train.model`` or ``train.small_input`` changed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medpipe import PipelineError
from medpipe.params.loading import defaults, validate
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.utils.files import atomic_path

APPLIED = ("train", "augment")  # sections the train stage takes from a plan


@dataclass
class Applied:
    train: TrainParams
    augment: AugmentParams
    input_size: int | None = None  # the side the model resizes to; None: the store's
    planned: list[str] = field(default_factory=list)  # keys the plan set
    overridden: list[str] = field(default_factory=list)  # planned keys params.yaml set

    def summary(self) -> dict:
        """For metrics/train.json: empty when there was no plan."""
        if not self.planned and not self.overridden and self.input_size is None:
            return {}
        return {"plan_applied": self.planned, "plan_overridden": self.overridden,
                "plan_input_size": self.input_size}


def write(path: Path, sections: dict[str, dict[str, Any]], header: str) -> None:
    """Write ``sections`` as a recipe file, ``header`` as its comment lines."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    body = yaml.safe_dump(sections, sort_keys=False) if sections else "{}\n"
    with atomic_path(path) as tmp:
        tmp.write_text(comment + body, encoding="utf-8")


def read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run the plan stage first") from None
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a mapping of params sections")
    return doc


def apply(plan: dict[str, dict[str, Any]], train: TrainParams, augment: AugmentParams,
          where: str = "data/plan.yaml") -> Applied:
    """``train`` and ``augment`` with the plan laid over the keys left at default."""
    current = {"train": train, "augment": augment}
    changes: dict[str, dict[str, Any]] = {"train": {}, "augment": {}}
    out = Applied(train, augment)
    for section in APPLIED:
        base = defaults(section)
        for key, value in plan.get(section, {}).items():
            if key not in base:
                raise PipelineError(f"{where}: unknown key '{section}.{key}'; replan")
            if _same(getattr(current[section], key), base[key]):
                changes[section][key] = value
                out.planned.append(f"{section}.{key}")
            else:
                out.overridden.append(f"{section}.{key}")
    out.train = validate(dataclasses.replace(train, **changes["train"]), stage="train",
                         where=where)
    out.augment = validate(dataclasses.replace(augment, **changes["augment"]), stage="train",
                           where=where)
    user_model = {"train.model", "train.small_input"} & set(out.overridden)
    side = plan.get("prepare", {}).get("image_size")
    if side is not None and not user_model:
        out.input_size = int(side)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as params: 3 and 3.0 are the same number, true is not 1."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return isinstance(a, bool) == isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b
