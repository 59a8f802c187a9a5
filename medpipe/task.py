"""The task a store poses, decided once: one class per image, or any set of findings.

The prepare stage records it in the store's ``stats.json`` (``task``), train copies it into
the model file, and every later step builds one :class:`Task` from there
(:func:`from_meta`) and asks it, instead of testing the task's name: the dtype of the
targets, how logits become probabilities, which decisions a batch makes, whether batches
can be balanced by class, what a threshold applies to. Steps above this module (the loss,
the summary, the report) look up their own per-task functions by :attr:`Task.name`, once.

- :class:`MultiClass` (``multiclass``): labels are class indices ``(N,)``, a softmax over
  the classes; with two classes the second is the positive class and a decision threshold
  applies to its probability.
- :class:`MultiLabel` (``multilabel``): labels are multi-hot ``(N, K)``, a sigmoid per
  finding, each finding its own yes/no decision with its own threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from medpipe import PipelineError


class Task:
    """What the labels of a store mean; ``classes`` are its class (or finding) names."""

    name: ClassVar[str]
    target_dtype: ClassVar[type]  # labels as training targets
    store_dtype: ClassVar[type]  # labels in the array store
    # Whether batches can be balanced by class (train.balance: sampler).
    balances_by_class: ClassVar[bool]
    outputs: ClassVar[str]  # what the model's outputs are, for the exported model's notes

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.classes!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.classes == self.classes

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int | None:
        """The index of the class a threshold applies to (the second of two), or None:
        what the evaluation's functions take as ``positive``."""
        return None

    @property
    def positive_class(self) -> str | None:
        """The class a threshold applies to (the second of two), or None."""
        k = self.positive_index
        return None if k is None else self.classes[k]

    @property
    def thresholded(self) -> bool:
        """Whether decisions are made at a threshold on a probability (which the
        evaluate stage can choose on the validation split), not by the argmax."""
        return self.positive_class is not None

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_logits(self, probs: torch.Tensor) -> torch.Tensor:
        """Logits whose probabilities are ``probs``: what a model averaging the
        probabilities of several (an ensemble) outputs, to be read as one model's."""
        raise NotImplementedError

    def hits(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Right decisions and decisions made in a batch at probability 0.5 / the argmax."""
        raise NotImplementedError

    def nll(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """Mean negative log-likelihood of ``labels`` under ``probs``."""
        raise NotImplementedError

    def accuracy(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """The share of right decisions (as :meth:`hits` counts them)."""
        raise NotImplementedError

    def balanced_accuracy(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """The mean recall of the classes present in ``labels`` (multi-label: over the
        findings, the mean of the recalls of their present and absent images): the
        accuracy as if every class were as common, whatever the split's class mix."""
        raise NotImplementedError

    def check_labels(self, labels: np.ndarray, where: str) -> None:
        """Refuse labels of the wrong shape or range, naming ``where`` they come from."""
        raise NotImplementedError


class MultiClass(Task):
    name = "multiclass"
    target_dtype = np.int64
    store_dtype = np.int64
    balances_by_class = True
    outputs = "logits (B, classes); softmax gives probabilities"

    @property
    def positive_index(self) -> int | None:
        return 1 if len(self.classes) == 2 else None

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def to_logits(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.log(probs.clamp_min(1e-30))  # softmax(log p) = p where p sums to 1

    def hits(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        return (logits.argmax(1) == y).sum(), len(y)

    def nll(self, probs: np.ndarray, labels: np.ndarray) -> float:
        p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
        return float(-np.log(p_true).mean())

    def accuracy(self, probs: np.ndarray, labels: np.ndarray) -> float:
        return float((probs.argmax(1) == labels).mean())

    def balanced_accuracy(self, probs: np.ndarray, labels: np.ndarray) -> float:
        right = probs.argmax(1) == labels
        recalls = [right[labels == k].mean() for k in np.unique(labels)]
        return float(np.mean(recalls)) if recalls else float("nan")

    def check_labels(self, labels: np.ndarray, where: str) -> None:
        labels, n = np.asarray(labels), self.n_outputs
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise PipelineError(f"{where}: expected integer class labels of shape (N,), got "
                                f"{labels.dtype} {labels.shape} (multi-label data needs "
                                "\"task\": \"multilabel\" in stats.json)")
        if labels.size and (labels.min() < 0 or labels.max() >= n):
            raise PipelineError(f"{where}: labels must lie in 0..{n - 1}, found "
                                f"{labels.min()}..{labels.max()}")


class MultiLabel(Task):
    name = "multilabel"
    target_dtype = np.float32
    store_dtype = np.uint8
    balances_by_class = False  # an image has several findings: no class to balance by
    outputs = "logits (B, findings); a sigmoid gives each finding's probability"
    thresholded = True  # type: ignore[assignment]  # one threshold per finding

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def to_logits(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.logit(probs, eps=1e-7)  # sigmoid(logit p) = p

    def hits(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        return ((logits >= 0) == (y >= 0.5)).sum(), y.numel()  # logit >= 0 is p >= 0.5

    def nll(self, probs: np.ndarray, labels: np.ndarray) -> float:
        p = np.clip(probs, 1e-12, 1.0 - 1e-12)  # binary cross-entropy averaged over findings
        return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())

    def accuracy(self, probs: np.ndarray, labels: np.ndarray) -> float:
        return float(((probs >= 0.5) == (labels >= 0.5)).mean())

    def balanced_accuracy(self, probs: np.ndarray, labels: np.ndarray) -> float:
        right, present = (probs >= 0.5) == (labels >= 0.5), labels >= 0.5
        recalls = [right[side, k].mean() for k in range(labels.shape[1])
                   for side in (present[:, k], ~present[:, k]) if side.any()]
        return float(np.mean(recalls)) if recalls else float("nan")

    def check_labels(self, labels: np.ndarray, where: str) -> None:
        labels, n = np.asarray(labels), self.n_outputs
        ok = labels.ndim == 2 and labels.shape[1] == n
        if ok and labels.size:
            ok = bool(np.isin(labels, (0, 1)).all())
        if not ok:
            raise PipelineError(f"{where}: a multi-label store needs 0/1 labels of shape "
                                f"(N, {n}), got {labels.dtype} {labels.shape}")


TASKS: dict[str, type[Task]] = {t.name: t for t in (MultiClass, MultiLabel)}


def named(name: str, classes: Sequence[str], where: str = "task") -> Task:
    """The task called ``name`` over ``classes``; an unknown name is refused."""
    if name not in TASKS:
        raise PipelineError(f"{where}: unknown task '{name}'; expected "
                            f"{' or '.join(TASKS)}")
    return TASKS[name](classes)


def from_meta(meta: dict, where: str = "task") -> Task:
    """The task a store's ``stats.json`` or a model file declares (``task``, absent in
    files written before multi-label support: multiclass) over its ``classes``."""
    return named(meta.get("task") or MultiClass.name, meta["classes"], where)


def of_labels(labels: np.ndarray, classes: Sequence[str] | None = None) -> Task:
    """The task labels of this shape pose: multi-hot ``(N, K)`` or class indices ``(N,)``
    (class names default to the indices, or ``finding k``)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return MultiLabel(classes or [f"finding {k}" for k in range(labels.shape[1])])
    n = int(labels.max()) + 1 if labels.size else 0
    return MultiClass(classes or [str(k) for k in range(n)])
