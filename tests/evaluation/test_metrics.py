"""Clinical metrics: ROC AUC (a positive class's / macro one-vs-rest), the report and ROC
points; whether there is a positive class is the task's to say."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medpipe.evaluation import metrics
from medpipe.task import MultiClass, MultiLabel


def random_probs(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def one_hot_probs(pred: list[int], k: int) -> np.ndarray:
    """Probabilities whose argmax is ``pred`` (0.6 on the predicted class)."""
    p = np.full((len(pred), k), 0.4 / (k - 1))
    p[np.arange(len(pred)), pred] = 0.6
    return p


# ----------------------------------------------------------------------------------- roc_auc


def test_binary_auc_is_sklearn_on_the_positive_column() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    probs = random_probs(60, 2, 1)
    probs[:, 1] = np.clip(probs[:, 1] + 0.3 * labels, 0, 1)  # some signal
    probs[:, 0] = 1 - probs[:, 1]
    got = metrics.roc_auc(labels, probs, positive=1)
    assert got == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=1e-9)
    assert 0.5 < got < 1.0


def test_binary_auc_perfect_and_inverted() -> None:
    labels = np.array([0, 0, 1, 1])
    good = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert metrics.roc_auc(labels, good, positive=1) == 1.0
    assert metrics.roc_auc(labels, good[:, ::-1], positive=1) == 0.0


@pytest.mark.parametrize(("k", "positive"), [(2, 1), (3, None)])
def test_auc_with_tied_scores_matches_sklearn(k: int, positive: int | None) -> None:
    """Scores on a 0.1 grid: many ties, which count one half."""
    labels = np.arange(80) % k
    probs = np.round(random_probs(80, k, 11 + k), 1)
    probs[np.arange(80), labels] += 0.1 * (np.arange(80) % 3 == 0)
    assert len(np.unique(probs[:, 1])) < 20  # ties really happen
    # Macro one-vs-rest by hand (sklearn's multi_class='ovr' insists rows sum to 1).
    expected = np.mean([roc_auc_score(labels == c, probs[:, c])
                        for c in ([positive] if positive is not None else range(k))])
    assert metrics.roc_auc(labels, probs, positive=positive) == pytest.approx(expected, abs=1e-9)


def test_multiclass_auc_is_sklearn_macro_ovr() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 90)
    probs = random_probs(90, 3, 3)
    probs[np.arange(90), labels] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all classes present: no warning
        got = metrics.roc_auc(labels, probs, positive=None)
    assert got == pytest.approx(expected, abs=1e-9)


def test_absent_class_warns_and_is_left_out_of_the_macro_mean() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 50) * 2  # classes 0 and 2 only; class 1 absent
    probs = random_probs(50, 3, 5)
    with pytest.warns(UserWarning, match="class 1 absent"):
        got = metrics.roc_auc(labels, probs, positive=None)
    expected = np.mean([roc_auc_score(labels == 0, probs[:, 0]),
                        roc_auc_score(labels == 2, probs[:, 2])])
    assert got == pytest.approx(expected, abs=1e-9)
    assert math.isfinite(got)


@pytest.mark.parametrize(("k", "positive"), [(2, 1), (3, None)])
def test_single_class_gives_nan_with_a_warning(k: int, positive: int | None) -> None:
    labels = np.ones(10, dtype=int)
    with pytest.warns(UserWarning, match="single class"):
        got = metrics.roc_auc(labels, random_probs(10, k, 0), positive=positive)
    assert math.isnan(got)


# --------------------------------------------------------------------- classification_report


def test_classification_report_on_a_hand_made_confusion() -> None:
    """Three classes, ten images. Confusion (rows actual, columns predicted)::

                  a  b  c
        actual a  3  1  0     support 4
        actual b  1  2  1     support 4
        actual c  0  0  2     support 2
    """
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    pred = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2]
    probs = one_hot_probs(pred, 3)
    report = metrics.classification_report(np.array(labels), probs, ["a", "b", "c"],
                                           positive=None)

    assert report["n"] == 10
    assert report["accuracy"] == pytest.approx(7 / 10)
    assert report["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 4 + 2 / 2) / 3)
    per = report["per_class"]
    assert list(per) == ["a", "b", "c"]
    # a: TP 3, FP 1 (a b predicted a), FN 1, TN 5
    assert per["a"]["precision"] == pytest.approx(3 / 4)
    assert per["a"]["recall"] == pytest.approx(3 / 4)
    assert per["a"]["specificity"] == pytest.approx(5 / 6)
    assert per["a"]["f1"] == pytest.approx(3 / 4)
    assert per["a"]["support"] == 4
    # b: TP 2, FP 1, FN 2, TN 5
    assert per["b"]["precision"] == pytest.approx(2 / 3)
    assert per["b"]["recall"] == pytest.approx(2 / 4)
    assert per["b"]["specificity"] == pytest.approx(5 / 6)
    assert per["b"]["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert per["b"]["support"] == 4
    # c: TP 2, FP 1, FN 0, TN 7
    assert per["c"]["precision"] == pytest.approx(2 / 3)
    assert per["c"]["recall"] == pytest.approx(1.0)
    assert per["c"]["specificity"] == pytest.approx(7 / 8)
    assert per["c"]["f1"] == pytest.approx(0.8)
    assert per["c"]["support"] == 2
    assert report["roc_auc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def test_classification_report_binary_sensitivity_specificity() -> None:
    """Binary, 8 images: TP 3, FN 1, FP 2, TN 2 for 'opacity'."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    pred = [1, 1, 1, 0, 1, 1, 0, 0]
    report = metrics.classification_report(labels, one_hot_probs(pred, 2),
                                           ["normal", "opacity"], positive=1)
    opacity, normal = report["per_class"]["opacity"], report["per_class"]["normal"]
    assert opacity["recall"] == pytest.approx(3 / 4)  # sensitivity
    assert opacity["specificity"] == pytest.approx(2 / 4)
    assert opacity["precision"] == pytest.approx(3 / 5)
    assert normal["recall"] == pytest.approx(2 / 4)
    assert normal["specificity"] == pytest.approx(3 / 4)
    assert normal["precision"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(5 / 8)


def test_classification_report_never_predicted_class_has_nan_precision() -> None:
    labels = np.array([0, 1, 0, 1])
    report = metrics.classification_report(labels, one_hot_probs([0, 0, 0, 0], 2), ["a", "b"],
                                           positive=1)
    assert math.isnan(report["per_class"]["b"]["precision"])
    assert report["per_class"]["b"]["recall"] == 0.0
    assert report["per_class"]["b"]["specificity"] == 1.0
    assert report["per_class"]["a"]["precision"] == pytest.approx(0.5)


# -------------------------------------------------------------------------------- roc_points


def test_binary_roc_points_run_from_origin_to_one_one() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 40)
    probs = random_probs(40, 2, 7)
    rows = metrics.roc_points(labels, probs, ["normal", "opacity"], positive=1)
    assert rows and {r["class"] for r in rows} == {"opacity"}
    assert (rows[0]["fpr"], rows[0]["tpr"]) == (0.0, 0.0)
    assert (rows[-1]["fpr"], rows[-1]["tpr"]) == (1.0, 1.0)
    fpr = [r["fpr"] for r in rows]
    tpr = [r["tpr"] for r in rows]
    assert fpr == sorted(fpr) and tpr == sorted(tpr)
    assert all(0.0 <= r["threshold"] <= 1.0 for r in rows)  # no inf in the JSON
    assert set(rows[0]) == {"class", "fpr", "tpr", "threshold"}


def test_multiclass_roc_points_one_curve_per_present_class() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1])  # class 2 absent: no curve for it
    rows = metrics.roc_points(labels, random_probs(6, 3, 8), ["a", "b", "c"], positive=None)
    assert {r["class"] for r in rows} == {"a", "b"}
    for name in ("a", "b"):
        curve = [r for r in rows if r["class"] == name]
        assert (curve[0]["fpr"], curve[0]["tpr"]) == (0.0, 0.0)
        assert (curve[-1]["fpr"], curve[-1]["tpr"]) == (1.0, 1.0)


# ------------------------------------------------------------- the positive class is the task's


def test_the_task_says_whether_two_columns_have_a_positive_class() -> None:
    """The same two columns of probabilities: with the two-class task's positive index the
    figures are class 1's; without a positive class they are per class (argmax, macro
    means, a curve per class). Nothing is inferred from the number of columns."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.5, 0.5], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.55, 0.45],
                      [0.1, 0.9]])
    positive = MultiClass(["normal", "opacity"]).positive_index
    assert positive == 1
    assert MultiLabel(["normal", "opacity"]).positive_index is None

    # p(class 1) >= 0.5 calls the tie in row 0 positive; the argmax gives it to class 0.
    assert metrics.decide(probs, positive=positive).tolist() == [1, 0, 1, 1, 0, 1]
    assert metrics.decide(probs, positive=None).tolist() == [0, 0, 1, 1, 0, 1]
    assert metrics.decide(probs, 0.85, positive=positive).tolist() == [0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="positive class"):
        metrics.decide(probs, 0.85, positive=None)

    rates = metrics.class_rates(metrics.confusion(labels, metrics.decide(probs, positive=1), 2))
    at_one = metrics.summarise_rates(rates, positive=1)
    per_class = metrics.summarise_rates(rates, positive=None)
    assert at_one["sensitivity"] == pytest.approx(2 / 3)  # class 1's: 2 of 3 found
    assert at_one["specificity"] == pytest.approx(1 / 3)
    assert per_class["sensitivity"] == pytest.approx((1 / 3 + 2 / 3) / 2)  # macro mean

    one = metrics.roc_points(labels, probs, ["normal", "opacity"], positive=positive)
    both = metrics.roc_points(labels, probs, ["normal", "opacity"], positive=None)
    assert {r["class"] for r in one} == {"opacity"}
    assert {r["class"] for r in both} == {"normal", "opacity"}
    pr_one = metrics.pr_points(labels, probs, ["normal", "opacity"], positive=positive)
    assert {r["class"] for r in pr_one} == {"opacity"}
    assert metrics.roc_auc(labels, probs, positive=positive) == pytest.approx(
        roc_auc_score(labels, probs[:, 1]))


def test_a_positive_class_other_than_the_second_is_honoured() -> None:
    """``positive`` names the class; class 0 as the positive one is decided, counted and
    scored as class 0, and the other class is the negative one."""
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    assert metrics.decide(probs, 0.5, positive=0).tolist() == [0, 1, 1, 0]
    report = metrics.classification_report(labels, probs, ["finding", "normal"], positive=0)
    assert report["sensitivity"] == report["per_class"]["finding"]["sensitivity"] == 0.5
    assert report["roc_auc"] == pytest.approx(roc_auc_score(labels == 0, probs[:, 0]))
