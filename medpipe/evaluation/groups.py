"""Subgroup performance: the scored split cut by the values of manifest columns (sex, age
band, site, scanner, view, ...), each value scored on its own with bootstrap intervals, at
the decisions of the whole split; and per column the largest gap between its values.

Layout (``groups`` in ``metrics/evaluate_detail.json``)::

    groups.<column>.values.<value>.{n, small, roc_auc, accuracy, sensitivity,
        specificity, ci95.{roc_auc, accuracy, sensitivity, specificity}.{low, high,
        dropped}, per_class (more than two classes)}
    groups.<column>.gaps.<metric>.{gap, lowest, highest, ci95.{low, high, dropped},
        separated}
        -> over the values with at least ``evaluate.min_group_cases`` cases
    groups.<column>.min_cases

A value with fewer cases than ``evaluate.min_group_cases`` is reported and marked
``small``, never dropped, but left out of the gaps: its figures are too uncertain to rank.
``ci95``: the bootstrap interval of the gap (each value's cases resampled on their own,
stratified by class; the figure of the highest minus that of the lowest), at 98.3% for
each of the three figures so that the three hold together at 95% (Bonferroni);
``separated``: that interval lies above 0, so the gap is not resampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from medpipe import PipelineError
from medpipe.evaluation import bootstrap
from medpipe.params.sections import EvaluateParams
from medpipe.task import Task

GAP_METRICS = ("roc_auc", "sensitivity", "specificity")
# The gaps' intervals hold jointly over the three figures (Bonferroni: 1 - 0.05 / 3 each),
# so a column shows a gap that is noise at most 5% of the time, not up to 15%.
GAP_LEVEL = 1.0 - (1.0 - bootstrap.LEVEL) / len(GAP_METRICS)
MISSING = "(missing)"  # the value of a case whose column is empty

Figures = Callable[[np.ndarray, np.ndarray, Task, dict, EvaluateParams], dict]


def check_columns(table: pd.DataFrame, columns: list[str], where: str) -> None:
    """Every column named in ``evaluate.groups`` must be in ``table``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PipelineError(f"params.yaml: 'evaluate.groups' names {', '.join(missing)}, not a "
                            f"column of {where}; its columns are "
                            f"{', '.join(map(str, table.columns))} (stage evaluate)")


def subgroups(figures: Figures, labels: np.ndarray, probs: np.ndarray, task: Task,
              table: pd.DataFrame, summary: dict, cfg: EvaluateParams) -> dict:
    """The ``groups`` section: ``table`` holds one row per scored case (in the order of
    ``labels``) with the columns of ``cfg.groups``; ``figures`` scores one group."""
    out = {}
    for column in cfg.groups:
        values = table[column].astype("string").replace("", pd.NA).fillna(MISSING).to_numpy()
        per_value = {}
        for value in sorted(set(values)):
            mask = values == value
            fig = figures(labels[mask], probs[mask], task, summary, cfg)
            per_value[str(value)] = {**fig, "small": bool(mask.sum() < cfg.min_group_cases)}
        out[column] = {"values": per_value, "gaps": gaps(per_value),
                       "min_cases": cfg.min_group_cases}
        for fig in per_value.values():
            fig.pop("resampled", None)  # arrays, not figures
    return out


def gaps(per_value: dict[str, dict]) -> dict[str, dict | None]:
    """Per metric, the largest difference between two values that are not ``small``."""
    out: dict[str, dict | None] = {}
    for metric in GAP_METRICS:
        ranked = sorted((fig[metric], value) for value, fig in per_value.items()
                        if not fig["small"] and math.isfinite(fig[metric]))
        if len(ranked) < 2:
            out[metric] = None
            continue
        (low, lowest), (high, highest) = ranked[0], ranked[-1]
        resampled = [per_value[v].get("resampled", {}).get(metric) for v in (highest, lowest)]
        ci = (bootstrap.difference_interval(*resampled, level=GAP_LEVEL)
              if all(r is not None for r in resampled) else None)
        out[metric] = {"gap": high - low, "lowest": lowest, "highest": highest, "ci95": ci,
                       "separated": None if ci is None else bool(ci["low"] > 0)}
    return out


def plot_rows(groups: dict) -> list[dict]:
    """Rows for the subgroup bar plot: one per column value and metric."""
    rows = []
    for column, section in groups.items():
        for value, fig in section["values"].items():
            for metric in GAP_METRICS:
                interval = (fig.get("ci95") or {}).get(metric) or {}
                rows.append({"group": f"{column}={value} {metric}", "n": fig["n"],
                             "value": _number(fig[metric]), "low": _number(interval.get("low")),
                             "high": _number(interval.get("high"))})
    return rows


def _number(x: float | None) -> float | None:
    return round(float(x), 6) if x is not None and math.isfinite(x) else None
