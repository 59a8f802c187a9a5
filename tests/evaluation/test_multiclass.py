"""Evaluation: clinical figures, threshold chosen on val, bootstrap intervals, calibration,
the summary layout and the Markdown report. Pure functions on hand-made numbers."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from medpipe import PipelineError
from medpipe.evaluation import bootstrap, calibration, metrics, multiclass
from medpipe.params.loading import parse_section, validate
from medpipe.params.sections import EvaluateParams
from medpipe.task import MultiClass

CFG = EvaluateParams(split="test", batch_size=8, device="cpu", threshold="youden",
                     target_sensitivity=0.9, bootstrap=200, seed=0, calibration_bins=10,
                     gradcam=0, tta="none")
TWO = MultiClass(["normal", "opacity"])  # positive class: opacity (index 1)
THREE = MultiClass(["a", "b", "c"])  # no positive class: argmax, macro means


def binary_probs(p_positive: list[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(p_positive, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=1)


def binormal(n_per_class: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities whose true AUC is Phi(separation / sqrt 2)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    score = rng.normal(size=2 * n_per_class) + separation * labels
    return labels, 1.0 / (1.0 + np.exp(-score))


# ------------------------------------------------------------------- figures and decisions


def test_binary_overall_figures_are_the_positive_class() -> None:
    """TP 3, FN 1, FP 2, TN 2 at 0.5 for the positive class."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    probs = binary_probs([0.9, 0.8, 0.6, 0.4, 0.7, 0.55, 0.3, 0.1])
    rep = metrics.classification_report(labels, probs, ["normal", "opacity"], positive=1)
    assert rep["sensitivity"] == pytest.approx(3 / 4)
    assert rep["specificity"] == pytest.approx(2 / 4)
    assert rep["ppv"] == pytest.approx(3 / 5)
    assert rep["npv"] == pytest.approx(2 / 3)
    assert rep["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    normal = rep["per_class"]["normal"]
    assert normal["sensitivity"] == normal["recall"] == pytest.approx(2 / 4)
    assert normal["ppv"] == normal["precision"] == pytest.approx(2 / 3)
    assert normal["npv"] == pytest.approx(3 / 5)
    # A threshold moves the decision: at 0.35 the 0.4 positive is caught, no new FP.
    at = metrics.classification_report(labels, probs, ["normal", "opacity"], threshold=0.35,
                                       positive=1)
    assert at["sensitivity"] == 1.0 and at["specificity"] == pytest.approx(2 / 4)


def test_decision_is_inclusive_at_the_threshold() -> None:
    probs = binary_probs([0.5, 0.4999, 0.3])
    assert metrics.decide(probs, None, positive=1).tolist() == [1, 0, 0]
    assert metrics.decide(probs, 0.3, positive=1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        metrics.decide(np.full((2, 3), 1 / 3), 0.5, positive=None)


def test_multiclass_figures_are_macro_means_matching_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], 200)
    probs[np.arange(200), labels] += 0.4
    probs /= probs.sum(1, keepdims=True)
    rep = metrics.classification_report(labels, probs, ["a", "b", "c"], positive=None)
    pred = probs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(labels, pred, labels=[0, 1, 2])
    assert rep["sensitivity"] == pytest.approx(r.mean())
    assert rep["ppv"] == pytest.approx(p.mean())
    assert rep["f1"] == pytest.approx(f.mean())
    cm = confusion_matrix(labels, pred)
    spec = [(cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]) / (cm.sum() - cm[k].sum())
            for k in range(3)]
    assert rep["specificity"] == pytest.approx(np.mean(spec))


def test_vectorised_confusion_matches_one_at_a_time() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (4, 50))
    pred = rng.integers(0, 3, (4, 50))
    stacked = metrics.confusion(labels, pred, 3)
    assert stacked.shape == (4, 3, 3)
    for b in range(4):
        assert (stacked[b] == confusion_matrix(labels[b], pred[b], labels=[0, 1, 2])).all()


def test_absent_class_gives_nan_and_a_warning_not_a_crash() -> None:
    labels = np.array([0, 0, 2, 2, 0, 2])  # class 'b' absent
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3],
                      [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    with pytest.warns(UserWarning, match="class 'b' absent"):
        rep = metrics.classification_report(labels, probs, ["a", "b", "c"], positive=None)
    b = rep["per_class"]["b"]
    assert math.isnan(b["sensitivity"]) and b["support"] == 0
    assert b["specificity"] == pytest.approx(5 / 6)  # one case wrongly called 'b'...
    assert b["ppv"] == 0.0 and b["f1"] == 0.0  # ...so its PPV and F1 are defined: 0
    # Macro figures average the classes where they are defined.
    assert rep["sensitivity"] == pytest.approx((3 / 3 + 2 / 3) / 2)
    assert math.isfinite(rep["balanced_accuracy"])


def test_binary_without_positives_gives_nan_sensitivity_with_warnings() -> None:
    labels = np.zeros(5, dtype=int)
    with pytest.warns(UserWarning) as caught:
        rep = metrics.classification_report(labels, binary_probs([0.1, 0.2, 0.7, 0.3, 0.4]),
                                            ["normal", "opacity"], positive=1)
    messages = " ".join(str(w.message) for w in caught)
    assert "'opacity' absent" in messages and "single class" in messages
    assert math.isnan(rep["sensitivity"]) and math.isnan(rep["roc_auc"])
    assert rep["specificity"] == pytest.approx(4 / 5)


# ------------------------------------------------------------------------------ threshold


def test_youden_threshold_on_a_hand_made_split() -> None:
    # Positives 0.36..0.9, negatives 0.1..0.4. J: 0.5 at 0.7, 0.5 at 0.38, 0.75 at 0.36;
    # the threshold goes midway between 0.36 and the next lower score, 0.3.
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.7, 0.38, 0.36, 0.4, 0.3, 0.2, 0.1])
    chosen = metrics.choose_threshold(labels, p, "youden", 0.9)
    assert chosen["value"] == pytest.approx(0.33)
    assert chosen["val_sensitivity"] == 1.0 and chosen["val_specificity"] == 0.75
    assert chosen["fallback"] is None and chosen["rule"] == "youden"
    # A tie (J 0.75 calling >= 0.45 or >= 0.35) goes to fewer positive calls: 0.45, and
    # the threshold midway to the next lower score 0.4.
    tied = np.array([0.9, 0.7, 0.45, 0.35, 0.4, 0.3, 0.2, 0.1])
    assert metrics.choose_threshold(labels, tied, "youden", 0.9)["value"] == pytest.approx(0.425)


def test_target_sensitivity_takes_the_highest_threshold_reaching_it() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.7, 0.45, 0.35, 0.4, 0.3, 0.2, 0.1])
    chosen = metrics.choose_threshold(labels, p, "target_sensitivity", 0.75)
    assert chosen["value"] == pytest.approx(0.425)  # 3 of 4 positives, no false positive
    assert chosen["val_sensitivity"] == 0.75 and chosen["val_specificity"] == 1.0
    strict = metrics.choose_threshold(labels, p, "target_sensitivity", 0.8)
    assert strict["value"] == pytest.approx(0.325) and strict["val_sensitivity"] == 1.0


def test_threshold_with_one_class_in_val_falls_back_to_half_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="needs both classes"):
        chosen = metrics.choose_threshold(np.ones(4, int), np.full(4, 0.7), "youden", 0.9)
    assert chosen["value"] == 0.5 and "both classes" in chosen["fallback"]


def test_threshold_is_chosen_on_val_and_applied_unchanged_to_test() -> None:
    # Val: the positives sit at 0.31 and above, the negatives at 0.3 and below: 0.305.
    val_labels = np.array([1, 1, 1, 0, 0, 0])
    val_p = np.array([0.31, 0.5, 0.8, 0.1, 0.2, 0.3])
    # Test: a threshold chosen on test itself would differ (its positives are at 0.6+).
    labels = np.array([1, 1, 0, 0, 0])
    p = np.array([0.6, 0.9, 0.35, 0.2, 0.1])
    summary, _ = multiclass.summarise(labels, binary_probs(p), TWO, CFG, val_labels,
                                      binary_probs(val_p))
    thr = summary["threshold"]
    assert thr["value"] == pytest.approx(0.305) and thr["chosen_on"] == "val"
    assert thr["rule"] == "youden"
    assert (thr["val_sensitivity"], thr["val_specificity"]) == (1.0, 1.0)
    # At 0.305 the 0.35 negative is a false positive on test; at 0.5 it is not.
    assert summary["at_threshold"]["specificity"] == pytest.approx(2 / 3)
    assert summary["specificity"] == 1.0
    expected = metrics.classification_report(labels, binary_probs(p), ["normal", "opacity"],
                                             threshold=0.305, positive=1)
    for key in multiclass.FIGURES:
        assert summary["at_threshold"][key] == pytest.approx(expected[key])


def test_fixed_threshold_needs_no_validation_data() -> None:
    cfg = dataclasses.replace(CFG, threshold=0.7)
    summary, _ = multiclass.summarise(np.array([1, 0, 1, 0]),
                                      binary_probs([0.8, 0.6, 0.65, 0.1]), TWO, cfg)
    assert summary["threshold"]["value"] == 0.7 and summary["threshold"]["chosen_on"] == "params"
    assert summary["at_threshold"]["sensitivity"] == 0.5
    assert summary["sensitivity"] == 1.0  # at 0.5


def test_multiclass_uses_argmax_and_no_threshold() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[[0, 1, 2, 0, 2, 2]] * 0.7 + 0.1
    summary, rows = multiclass.summarise(labels, probs, THREE, CFG)
    assert summary["threshold"] == {"rule": "argmax", "value": None, "chosen_on": None}
    assert "at_threshold" not in summary and "positive_class" not in summary
    assert set(summary["ci95"]) == {"roc_auc", "accuracy", "sensitivity", "specificity"}
    text = multiclass.render(summary, model="m.pt", model_sha256="0" * 64, plots={},
                         reliability=rows)
    assert "argmax" in text and "macro means" in text and "| sensitivity (recall) |" in text


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("threshold", 1.5, "'evaluate.threshold' must be youden, target_sensitivity or a"),
    ("threshold", 0, "'evaluate.threshold'"),
    ("target_sensitivity", 0.0, "'evaluate.target_sensitivity' must be in (0, 1]"),
    ("bootstrap", -1, "'evaluate.bootstrap'"),
    ("calibration_bins", 0, "'evaluate.calibration_bins' must be at least 1"),
    ("gradcam", -1, "'evaluate.gradcam' must be 0 (no heat maps) or more"),
])
def test_bad_evaluate_values_are_one_line_errors(key: str, value: float, needle: str) -> None:
    with pytest.raises(PipelineError) as info:
        validate(dataclasses.replace(CFG, **{key: value}), stage="evaluate")
    assert needle in str(info.value) and "(stage evaluate)" in str(info.value)


def test_threshold_param_accepts_rules_and_numbers_only() -> None:
    base = dataclasses.asdict(CFG)
    assert parse_section("evaluate", {**base, "threshold": 0.5}, stage="evaluate").threshold == 0.5
    assert parse_section("evaluate", {**base, "threshold": "target_sensitivity"},
                         stage="evaluate").threshold == "target_sensitivity"
    with pytest.raises(PipelineError, match="'evaluate.threshold' must be one of 'youden', "
                                            "'target_sensitivity' or a number, got 'yuoden'"):
        parse_section("evaluate", {**base, "threshold": "yuoden"}, stage="evaluate")
    with pytest.raises(PipelineError, match="'evaluate.threshold'"):
        parse_section("evaluate", {**base, "threshold": True}, stage="evaluate")


# ------------------------------------------------------------------------------ bootstrap


def test_stratified_resamples_keep_the_class_counts() -> None:
    labels = np.array([0] * 7 + [1] * 3)
    idx = bootstrap.resample_indices(labels, 50, seed=0)
    assert idx.shape == (50, 10)
    assert ((labels[idx] == 1).sum(1) == 3).all()


def test_resamples_come_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    labels, p = binormal(50, 1.0, seed=9)
    whole = bootstrap.bootstrap_intervals(labels, binary_probs(p), n_resamples=90, seed=1,
                                          thresholds={"d": None}, positive=1)
    monkeypatch.setattr(bootstrap, "BLOCK_CELLS", 100 * 40)  # blocks of 40 resamples
    blocks = list(bootstrap.resample_blocks(labels, 90, seed=1))
    assert [len(b) for b in blocks] == [40, 40, 10]
    assert all(((labels[b] == 1).sum(1) == 50).all() for b in blocks)
    ci = bootstrap.bootstrap_intervals(labels, binary_probs(p), n_resamples=90, seed=1,
                                       thresholds={"d": None}, positive=1)
    assert ci == bootstrap.bootstrap_intervals(labels, binary_probs(p), n_resamples=90,
                                               seed=1, thresholds={"d": None}, positive=1)
    # Other blocks draw other resamples, but the intervals agree to sampling error.
    assert ci["roc_auc"]["low"] == pytest.approx(whole["roc_auc"]["low"], abs=0.05)


def test_resampled_auc_equals_the_exact_auc_with_ties() -> None:
    labels, p = binormal(40, 1.0, seed=1)
    p = np.round(p, 1)  # many ties
    idx = bootstrap.resample_indices(labels, 20, seed=2)
    got = bootstrap.auc_resampled(labels == 1, p, idx)
    expected = [metrics.binary_auc(labels[i] == 1, p[i]) for i in idx]
    assert got == pytest.approx(expected, abs=1e-12)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    labels, p = binormal(60, 1.0, seed=3)
    run = dict(n_resamples=300, thresholds={"default": None, "at": 0.4}, positive=1)
    a = bootstrap.bootstrap_intervals(labels, binary_probs(p), seed=7, **run)
    b = bootstrap.bootstrap_intervals(labels, binary_probs(p), seed=7, **run)
    c = bootstrap.bootstrap_intervals(labels, binary_probs(p), seed=8, **run)
    assert a == b and a != c
    assert set(a) == {"roc_auc", "default.accuracy", "default.sensitivity",
                      "default.specificity", "at.accuracy", "at.sensitivity", "at.specificity"}
    auc = metrics.binary_auc(labels == 1, p)
    assert a["roc_auc"]["low"] < auc < a["roc_auc"]["high"]


def test_interval_drops_and_counts_undefined_resamples() -> None:
    values = np.array([0.1, np.nan, 0.2, 0.3, np.nan] + [0.25] * 15)
    ci = bootstrap.percentile_interval(values)
    assert ci["dropped"] == 2
    assert ci["low"] == pytest.approx(np.percentile(values[~np.isnan(values)], 2.5))
    none = bootstrap.percentile_interval(np.full(5, np.nan))
    assert none["dropped"] == 5 and math.isnan(none["low"]) and math.isnan(none["high"])


def test_bootstrap_intervals_cover_the_true_values() -> None:
    """200 samples from a known population: the 95% intervals of AUC and sensitivity
    should contain the true value about 95% of the time (loose bounds: 100 trials)."""
    separation, threshold = 1.0, 0.5
    true_auc = NormalDist().cdf(separation / math.sqrt(2))
    true_sens = 1 - NormalDist(mu=separation).cdf(0.0)  # sigmoid(score) >= 0.5 <=> score >= 0
    hits = {"roc_auc": 0, "sensitivity": 0}
    trials = 100
    for trial in range(trials):
        labels, p = binormal(100, separation, seed=100 + trial)
        ci = bootstrap.bootstrap_intervals(labels, binary_probs(p), n_resamples=400,
                                           seed=trial, thresholds={"d": threshold},
                                           positive=1)
        hits["roc_auc"] += ci["roc_auc"]["low"] <= true_auc <= ci["roc_auc"]["high"]
        hits["sensitivity"] += (ci["d.sensitivity"]["low"] <= true_sens
                                <= ci["d.sensitivity"]["high"])
    for name, n in hits.items():
        assert 0.85 <= n / trials <= 1.0, (name, n)


def test_thousand_resamples_of_three_thousand_cases_take_well_under_seconds() -> None:
    labels, p = binormal(1500, 1.0, seed=4)
    start = time.perf_counter()
    bootstrap.bootstrap_intervals(labels, binary_probs(p), n_resamples=1000, seed=0,
                                  thresholds={"default": None, "at_threshold": 0.4},
                                  positive=1)
    assert time.perf_counter() - start < 3.0


def test_bootstrap_of_a_single_class_drops_every_resample_for_auc() -> None:
    ci = bootstrap.bootstrap_intervals(np.ones(6, int), binary_probs(np.linspace(0.1, 0.9, 6)),
                                       n_resamples=50, seed=0, thresholds={"d": None},
                                       positive=1)
    assert ci["roc_auc"]["dropped"] == 50 and math.isnan(ci["roc_auc"]["low"])
    assert ci["d.specificity"]["dropped"] == 50  # no negatives: undefined in every resample
    assert ci["d.sensitivity"]["dropped"] == 0


def test_no_resamples_no_intervals() -> None:
    cfg = dataclasses.replace(CFG, bootstrap=0, threshold=0.5)
    summary, _ = multiclass.summarise(np.array([0, 1]), binary_probs([0.2, 0.8]), TWO, cfg)
    assert summary["ci95"] is None


# ---------------------------------------------------------------------------- calibration


def test_ece_on_a_hand_made_case() -> None:
    """Two bins. [0, 0.5): p 0.2 x4, 1 positive (gap 0.05); [0.5, 1]: p 0.8 x4, 2 positive
    (gap 0.3). ECE = 0.5 * 0.05 + 0.5 * 0.3 = 0.175; MCE 0.3."""
    labels = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    rows = calibration.reliability(labels, binary_probs([0.2] * 4 + [0.8] * 4), bins=2,
                                   positive=1)
    assert [(r["bin"], r["count"]) for r in rows] == [(0, 4), (1, 4)]
    assert rows[0]["mean_probability"] == pytest.approx(0.2)
    assert rows[0]["observed_frequency"] == pytest.approx(0.25)
    assert rows[1]["observed_frequency"] == pytest.approx(0.5)
    errors = calibration.calibration_errors(rows)
    assert errors["ece"] == pytest.approx(0.175) and errors["mce"] == pytest.approx(0.3)


def test_perfect_calibration_and_the_closed_last_bin() -> None:
    labels = np.array([1, 1, 0, 0])
    rows = calibration.reliability(labels, binary_probs([1.0, 1.0, 0.0, 0.0]), bins=10,
                                   positive=1)
    assert [r["bin"] for r in rows] == [0, 9]  # p = 1.0 lands in the last bin
    assert calibration.calibration_errors(rows)["ece"] == 0.0


def test_multiclass_calibration_uses_top_label_confidence() -> None:
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    rows = calibration.reliability(labels, probs, bins=5, positive=None)
    # Confidence 0.6 (bin 3): one of two right; 0.8 (bin 4): both right.
    assert [(r["bin"], r["observed_frequency"]) for r in rows] == [(3, 0.5), (4, 1.0)]
    assert calibration.calibration_errors(rows)["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)


def test_the_calibrated_probability_is_the_tasks_choice() -> None:
    """Two columns with the two-class task's positive index: the positive class's
    probability against the case being positive; without a positive class: the top-label
    confidence against the argmax being right."""
    labels = np.array([1, 0, 0])
    probs = binary_probs([0.3, 0.2, 0.9])
    p, event = calibration.event_and_probability(labels, probs, positive=TWO.positive_index)
    assert p.tolist() == [0.3, 0.2, 0.9] and event.tolist() == [True, False, False]
    p, event = calibration.event_and_probability(labels, probs, positive=None)
    assert p.tolist() == [0.7, 0.8, 0.9] and event.tolist() == [False, True, False]


def test_no_cases_gives_nan_calibration_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="without cases"):
        errors = calibration.calibration_errors([])
    assert math.isnan(errors["ece"])


# ------------------------------------------------------------------------ summary, report


def test_summary_layout_and_report() -> None:
    labels, p = binormal(80, 1.5, seed=5)
    val_labels, val_p = binormal(40, 1.5, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy case warns about nothing
        summary, rows = multiclass.summarise(labels, binary_probs(p), TWO, CFG, val_labels,
                                             binary_probs(val_p))
    for key in ["accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity",
                "ppv", "npv", "f1"]:
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["positive_class"] == "opacity"
    assert set(summary["ci95"]["at_threshold"]) == {"accuracy", "sensitivity", "specificity"}
    for interval in [summary["ci95"]["roc_auc"], summary["ci95"]["at_threshold"]["accuracy"]]:
        assert interval["low"] <= interval["high"] and interval["dropped"] == 0
    assert summary["calibration"]["bins"] == 10 and 0 <= summary["calibration"]["ece"] <= 1
    assert sum(r["count"] for r in rows) == 160

    text = multiclass.render(summary, model="models/model.pt", model_sha256="ab" * 32,
                         plots={"ROC curve": "evaluate/roc.json"}, reliability=rows)
    assert f">= **{summary['threshold']['value']:.4f}**" in text
    assert "Youden" in text and "validation split" in text
    assert "| sensitivity (recall) |" in text and "95% bootstrap confidence" in text
    assert f"{summary['calibration']['ece']:.3f}" in text
    assert "[ROC curve](evaluate/roc.json)" in text
    for r in rows:  # one line per non-empty probability bin
        assert f"| {r['lower']:.2f}–{r['upper']:.2f} | {r['count']} |" in text
    assert "nan" not in text.lower()
