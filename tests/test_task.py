"""The task object: labels checked against it, logits turned into its probabilities,
decisions counted, and the task read from a store's stats or a model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe import PipelineError
from medpipe import task as tasks
from medpipe.task import MultiClass, MultiLabel


def test_labels_must_fit_the_task() -> None:
    three = MultiLabel(["a", "b", "c"])
    with pytest.raises(PipelineError, match=r"x_labels.npy: a multi-label store needs 0/1"):
        three.check_labels(np.array([0, 1, 2]), "x_labels.npy")
    with pytest.raises(PipelineError, match=r"needs 0/1 labels of shape \(N, 3\)"):
        three.check_labels(np.array([[0, 2, 1]]), "x_labels.npy")
    with pytest.raises(PipelineError, match='"task": "multilabel" in stats.json'):
        MultiClass(["a", "b", "c"]).check_labels(np.zeros((4, 3), np.uint8), "x_labels.npy")
    with pytest.raises(PipelineError, match=r"x: labels must lie in 0..1, found 0..2"):
        MultiClass(["a", "b"]).check_labels(np.array([0, 2]), "x")
    three.check_labels(np.array([[0, 1, 1]], np.uint8), "x")
    MultiClass(["a", "b", "c"]).check_labels(np.array([0, 2]), "x")


def test_probabilities_are_a_softmax_or_a_sigmoid_per_finding() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    soft = MultiClass(["a", "b", "c"]).probabilities(logits)
    assert soft.sum().item() == pytest.approx(1.0)
    assert torch.allclose(MultiLabel(["a", "b", "c"]).probabilities(logits),
                          torch.sigmoid(logits))


def test_decisions_and_their_accuracy_agree() -> None:
    logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5], [0.2, 0.1]])
    classes = MultiClass(["a", "b"])
    right, made = classes.hits(logits, torch.tensor([0, 1, 1]))
    assert (int(right), made) == (2, 3)
    probs = classes.probabilities(logits).numpy()
    assert classes.accuracy(probs, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    findings = MultiLabel(["a", "b"])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    right, made = findings.hits(logits, y)
    assert (int(right), made) == (4, 6)  # row 3: both logits > 0, both absent
    probs = findings.probabilities(logits).numpy()
    assert findings.accuracy(probs, y.numpy()) == pytest.approx(4 / 6)


def test_balanced_accuracy_weighs_every_class_alike() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 7, 3])  # imbalanced, as validation splits are
    probs = rng.dirichlet(np.ones(3), size=60)
    classes = MultiClass(["a", "b", "c"])
    assert classes.balanced_accuracy(probs, labels) == pytest.approx(
        balanced_accuracy_score(labels, probs.argmax(1)))
    # always the common class: accuracy 0.9, balanced accuracy 0.5
    common = np.tile([0.9, 0.1], (10, 1))
    two = np.array([0] * 9 + [1])
    assert MultiClass(["a", "b"]).accuracy(common, two) == pytest.approx(0.9)
    assert MultiClass(["a", "b"]).balanced_accuracy(common, two) == pytest.approx(0.5)
    # findings: each finding's present and absent images weigh alike; a finding never
    # present counts only its absent images
    findings = MultiLabel(["a", "b"])
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 0]])
    called = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.1], [0.1, 0.1]])
    # a: present 1/1 right, absent 2/3 right; b: absent 4/4 right
    assert findings.balanced_accuracy(called, y) == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_negative_log_likelihoods() -> None:
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert MultiClass(["a", "b"]).nll(probs, np.array([0, 1])) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2)
    labels = np.array([[1, 0], [0, 1]])
    expected = -np.mean([np.log(0.8), np.log(0.8), np.log(0.6), np.log(0.6)])
    assert MultiLabel(["a", "b"]).nll(probs, labels) == pytest.approx(expected)


def test_the_positive_class_and_thresholds() -> None:
    assert MultiClass(["normal", "pneumonia"]).positive_class == "pneumonia"
    assert MultiClass(["normal", "pneumonia"]).positive_index == 1
    assert MultiClass(["normal", "pneumonia"]).thresholded
    assert MultiClass(["a", "b", "c"]).positive_class is None
    assert MultiClass(["a", "b", "c"]).positive_index is None
    # Two findings are two yes/no decisions, not one positive class.
    assert MultiLabel(["a", "b"]).positive_index is None
    assert not MultiClass(["a", "b", "c"]).thresholded
    assert MultiLabel(["a", "b"]).thresholded and not MultiLabel(["a"]).balances_by_class


def test_the_task_is_read_from_stats_or_a_model_file() -> None:
    assert tasks.from_meta({"classes": ["a", "b"]}) == MultiClass(["a", "b"])  # older files
    assert tasks.from_meta({"task": "multilabel", "classes": ["x"]}) == MultiLabel(["x"])
    with pytest.raises(PipelineError, match=r"stats.json: unknown task 'regression'; "
                                            r"expected multiclass or multilabel"):
        tasks.from_meta({"task": "regression", "classes": ["a"]}, "stats.json")


def test_the_task_labels_of_a_shape_pose() -> None:
    assert tasks.of_labels(np.array([0, 2, 1])) == MultiClass(["0", "1", "2"])
    assert tasks.of_labels(np.zeros((3, 2), np.uint8)).name == "multilabel"
    assert tasks.of_labels(np.zeros((3, 2), np.uint8)).n_outputs == 2
