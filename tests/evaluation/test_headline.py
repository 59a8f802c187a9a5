"""The headline of an evaluation (metrics/evaluate.json): few numbers, the same names for
every dataset, taken at the decision the model is used with; the task decides which."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from medpipe.evaluation import crossval, multiclass, multilabel
from medpipe.evaluation.headline import headline
from medpipe.params.sections import EvaluateParams
from medpipe.task import MultiClass, MultiLabel

CFG = EvaluateParams(split="test", device="cpu", threshold="youden", bootstrap=50, seed=0,
                     calibration_bins=10, gradcam=0)
SINGLE_LABEL = {"roc_auc", "roc_auc_low", "roc_auc_high", "accuracy", "balanced_accuracy",
                "sensitivity", "specificity", "ece"}


def scores(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities that favour the true class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


def findings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < 0.4).astype(np.int64)
    probs = 1 / (1 + np.exp(-(rng.normal(size=(n, 3)) + 2.0 * (labels - 0.5))))
    return labels, probs


def assert_numbers(figures: dict) -> None:
    for key, value in figures.items():
        assert isinstance(value, float | int) and not isinstance(value, bool), key
        assert math.isfinite(value), key


def test_binary_headline_is_at_the_chosen_threshold() -> None:
    task = MultiClass(["normal", "opacity"])
    labels, probs = scores(120, 2, seed=0)
    val_labels, val_probs = scores(80, 2, seed=1)
    s, _ = multiclass.summarise(labels, probs, task, CFG, val_labels, val_probs)
    h = headline(s, task)
    assert set(h) == SINGLE_LABEL | {"threshold"}
    assert_numbers(h)
    assert h["threshold"] == s["threshold"]["value"] != 0.5
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity"):
        assert h[key] == s["at_threshold"][key], key
    assert (h["roc_auc"], h["roc_auc_low"], h["roc_auc_high"]) == (
        s["roc_auc"], s["ci95"]["roc_auc"]["low"], s["ci95"]["roc_auc"]["high"])
    assert h["ece"] == s["calibration"]["ece"]
    # The names are the task's, never the classes': another pair of names, the same keys.
    other = MultiClass(["benign", "malignant"])
    s2, _ = multiclass.summarise(labels, probs, other, CFG, val_labels, val_probs)
    assert headline(s2, other) == h


def test_multiclass_headline_is_macro_at_the_argmax() -> None:
    task = MultiClass(["normal", "opacity", "effusion"])
    labels, probs = scores(150, 3, seed=2)
    s, _ = multiclass.summarise(labels, probs, task, CFG)
    h = headline(s, task)
    assert set(h) == SINGLE_LABEL  # no threshold: argmax
    assert_numbers(h)
    for key in SINGLE_LABEL - {"roc_auc_low", "roc_auc_high", "ece"}:
        assert h[key] == s[key], key
    per_class = s["per_class"].values()
    assert h["sensitivity"] == pytest.approx(np.mean([c["sensitivity"] for c in per_class]))


def test_multilabel_headline_is_the_mean_over_findings_at_their_thresholds() -> None:
    task = MultiLabel(["effusion", "nodule", "opacity"])
    labels, probs = findings(200, seed=3)
    val_labels, val_probs = findings(120, seed=4)
    s, _ = multilabel.summarise(labels, probs, task, CFG, val_labels, val_probs)
    h = headline(s, task)
    assert set(h) == {"roc_auc", "roc_auc_low", "roc_auc_high", "accuracy", "exact_match",
                      "sensitivity", "specificity", "ece"}
    assert_numbers(h)
    assert h["roc_auc"] == s["roc_auc"]
    for key in ("accuracy", "exact_match", "sensitivity", "specificity"):
        assert h[key] == s["at_threshold"][key], key


def test_without_bootstrap_the_interval_is_undefined() -> None:
    task = MultiClass(["normal", "opacity"])
    labels, probs = scores(60, 2, seed=5)
    s, _ = multiclass.summarise(labels, probs, task,
                                dataclasses.replace(CFG, bootstrap=0, threshold=0.5))
    h = headline(s, task)
    assert h["roc_auc_low"] is None and h["roc_auc_high"] is None  # left out when written


def test_folds_and_ensemble_add_their_headline_figures() -> None:
    task = MultiClass(["normal", "opacity"])
    test_labels, _ = scores(90, 2, seed=6)
    folds = []
    for k in range(3):
        val_labels, val_probs = scores(40, 2, seed=10 + k)
        folds.append(SimpleNamespace(fold=k, val_labels=val_labels, val_probs=val_probs,
                                     test_probs=scores(90, 2, seed=20 + k)[1]))
    s, _ = multiclass.summarise(test_labels, folds[0].test_probs, task, CFG,
                                folds[0].val_labels, folds[0].val_probs)
    s["folds"], s["ensemble"] = crossval.summarise(multiclass.summarise, folds, test_labels,
                                                   task, CFG)
    h = headline(s, task)
    assert_numbers(h)
    assert h["folds_roc_auc_mean"] == s["folds"]["mean"]["test"]["roc_auc"]
    assert h["folds_accuracy_sd"] == s["folds"]["sd"]["test"]["accuracy"]
    ens = s["ensemble"]
    assert h["ensemble_roc_auc"] == ens["roc_auc"]
    assert h["ensemble_roc_auc_low"] == ens["ci95"]["roc_auc"]["low"]
    assert h["ensemble_sensitivity"] == ens["at_threshold"]["sensitivity"]
    assert len(h) == len(SINGLE_LABEL) + 1 + 4 + 6
