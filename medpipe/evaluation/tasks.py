"""Which evaluation a task gets, chosen once from its name.

Each module here gives the same functions for its task, each taking the :class:`Task`
itself where it needs the class names or the positive class: ``summarise`` (the summary
and the reliability rows), ``predictions_table``, ``curves``, ``gradcam_cases``,
``group_figures``, ``render`` (the report) and ``headline`` (the line the stage logs).
"""

from __future__ import annotations

from types import ModuleType

from medpipe.evaluation import multiclass, multilabel
from medpipe.params.sections import EvaluateParams
from medpipe.task import Task

EVALUATIONS: dict[str, ModuleType] = {"multiclass": multiclass, "multilabel": multilabel}


def evaluation_of(task: Task) -> ModuleType:
    """The module that evaluates ``task``."""
    return EVALUATIONS[task.name]


def needs_validation(cfg: EvaluateParams, task: Task) -> bool:
    """Whether choosing the threshold(s) needs the validation split's probabilities."""
    return task.thresholded and isinstance(cfg.threshold, str)
