"""The plan as a recipe file, and the rule by which the stages apply it.

The plan stage writes ``data/plan.yaml`` in the format of ``recipes/*.yaml`` (sections
``prepare``, ``train``, ``augment``) after a mark, ``planned: true`` (``planned: false``
alone when there is no plan). DVC
tracks it as a params file of the prepare, train and crossval stages, so the planned
values show in ``dvc params diff`` and ``dvc exp show``. The prepare stage calls
:func:`apply_prepare` (the side the store is made at), the train and crossval stages
:func:`apply`: **the plan fills every planned key that params.yaml leaves at its default;
a key you changed (by hand or ``dvc exp run -S``) wins.**
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medpipe import PipelineError
from medpipe.params.loading import defaults, validate
from medpipe.params.sections import AugmentParams, PrepareParams, TrainParams
from medpipe.utils.files import atomic_path


@dataclass
class Applied:
    train: TrainParams
    augment: AugmentParams
    planned: list[str] = field(default_factory=list)  # keys the plan set
    overridden: list[str] = field(default_factory=list)  # planned keys params.yaml set

    def summary(self) -> dict:
        """For metrics/train.json: empty when there was no plan."""
        if not self.planned and not self.overridden:
            return {}
        return {"plan_applied": self.planned, "plan_overridden": self.overridden}


MARK = "planned"  # the plan's first key: true, or false with no other


def write(path: Path, sections: dict[str, dict[str, Any]], header: str) -> None:
    """Write ``sections`` as a recipe file, ``header`` as its comment lines, after
    ``planned: true`` (``false`` when there are none). The mark keeps the file from being
    empty: DVC never restores a stage whose params file holds no value from its run
    cache."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    body = yaml.safe_dump({MARK: bool(sections), **sections}, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(comment + body, encoding="utf-8")


def read(path: Path) -> dict[str, dict[str, Any]]:
    """The recipe's sections (the ``planned`` mark left out)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run the plan stage first") from None
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a mapping of params sections")
    return {section: values for section, values in doc.items() if section != MARK}


def apply(plan: dict[str, dict[str, Any]], train: TrainParams, augment: AugmentParams,
          where: str = "data/plan.yaml") -> Applied:
    """``train`` and ``augment`` with the plan laid over the keys left at default."""
    out = Applied(train, augment)
    for section in ("train", "augment"):
        laid, planned, overridden = _lay(plan, section, getattr(out, section), where)
        setattr(out, section, laid)
        out.planned += planned
        out.overridden += overridden
    return out


def apply_prepare(plan: dict[str, dict[str, Any]], prepare: PrepareParams,
                  where: str = "data/plan.yaml") -> tuple[PrepareParams, dict]:
    """``prepare`` with the plan's side laid over it when left at default, and the
    record for metrics/prepare_detail.json (empty when there was no plan)."""
    laid, planned, overridden = _lay(plan, "prepare", prepare, where)
    record = ({"plan_applied": planned, "plan_overridden": overridden}
              if planned or overridden else {})
    return laid, record


def _lay(plan: dict[str, dict[str, Any]], section: str, current, where: str):
    """(``current`` with the plan's ``section`` over its keys left at default, the keys
    the plan set, the planned keys params.yaml set)."""
    base = defaults(section)
    changes: dict[str, Any] = {}
    planned, overridden = [], []
    for key, value in (plan.get(section) or {}).items():
        if key not in base:
            raise PipelineError(f"{where}: unknown key '{section}.{key}'; replan")
        if _same(getattr(current, key), base[key]):
            changes[key] = value
            planned.append(f"{section}.{key}")
        else:
            overridden.append(f"{section}.{key}")
    stage = "prepare" if section == "prepare" else "train"
    return (validate(dataclasses.replace(current, **changes), stage=stage, where=where),
            planned, overridden)


def _same(a: Any, b: Any) -> bool:
    """Equal as params: 3 and 3.0 are the same number, true is not 1."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return isinstance(a, bool) == isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b
