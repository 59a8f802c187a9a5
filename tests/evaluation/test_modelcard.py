"""The model card's limitations come from the numbers: each rule fires on the figures that
break it, and none fires on a large, calibrated test split."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from medpipe.evaluation import modelcard, multiclass
from medpipe.params.sections import EvaluateParams
from medpipe.task import MultiClass

CLASSES = ["normal", "opacity"]


@pytest.fixture(scope="module")
def calibrated() -> dict:
    """2,000 cases whose probability is the true chance of the positive class; the
    threshold chosen on the same cases, so it carries over exactly."""
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    labels = (rng.random(2000) < p).astype(np.int64)
    probs = np.stack([1 - p, p], axis=1)
    cfg = EvaluateParams(device="cpu", bootstrap=200)
    summary, _ = multiclass.summarise(labels, probs, MultiClass(CLASSES), cfg, labels, probs)
    return summary


def test_no_rule_fires_on_a_large_calibrated_split(calibrated: dict) -> None:
    assert modelcard.limitations(calibrated, CLASSES) == []
    card = modelcard.render(calibrated, CLASSES)
    assert "None of the checks below fired" in card and "not a medical device" in card
    assert f"**{calibrated['threshold']['value']:.4f}**" in card


def changed(summary: dict, **paths) -> dict:
    """A deep copy with ``a__b__c=value`` set."""
    out = copy.deepcopy(summary)
    for path, value in paths.items():
        *keys, last = path.split("__")
        node = out
        for key in keys:
            node = node[key]
        node[last] = value
    return out


@pytest.mark.parametrize(("changes", "expected"), [
    ({"per_class__opacity__support": 12}, "Few test cases: opacity (12), under 30"),
    ({"ci95__at_threshold__sensitivity": {"low": 0.6, "high": 0.9, "dropped": 0}},
     "sensitivity 0.600 to 0.900 (0.30 wide)"),
    ({"ci95": None}, "No confidence intervals were computed"),
    ({"ci95__roc_auc": {"low": 0.48, "high": 0.58, "dropped": 0}},
     "interval (0.480 to 0.580) reaches 0.5"),
    ({"calibration__ece": 0.12, "calibration__mce": 0.3},
     "probability is off by 0.120 on average"),
    ({"threshold__val_specificity": 0.2}, "gave specificity 0.200 on the validation split"),
    ({"threshold__fallback": "'youden' needs both classes"}, "fell back to 0.5"),
])
def test_each_rule_fires_on_its_numbers(calibrated: dict, changes: dict, expected: str) -> None:
    found = modelcard.limitations(changed(calibrated, **changes), CLASSES)
    assert len(found) == 1 and expected in found[0], found


def test_subgroups_folds_and_data(calibrated: dict) -> None:
    groups = {"site": {"min_cases": 20, "values": {
        "a": {"n": 900, "small": False}, "b": {"n": 1090, "small": False},
        "c": {"n": 10, "small": True}},
        "gaps": {"roc_auc": {"gap": 0.08, "lowest": "b", "highest": "a", "separated": True},
                 "sensitivity": {"gap": 0.02, "lowest": "a", "highest": "b",
                                 "separated": False}}}}
    folds = {"k": 5, "sd": {"test": {"roc_auc": 0.06}}}
    found = modelcard.limitations({**calibrated, "groups": groups, "folds": folds}, CLASSES,
                                  prepare={"duplicates": {"count": 3, "dropped": 0},
                                           "patients": {"count": None}},
                                  dataset={"source": "synthetic"})
    text = "\n".join(found)
    assert "Subgroups of site with fewer than 20 cases (c)" in text
    assert "roc_auc differs by 0.080 between site b (lower) and a" in text
    assert "sensitivity differs" not in text  # within resampling noise
    assert "test AUC varies with sd 0.060" in text
    assert "3 duplicate image group(s) were kept" in text
    assert "Patient ids are unknown" in text and "synthetic" in text
    resolved = modelcard.limitations(calibrated, CLASSES, prepare={
        "duplicates": {"count": 3, "dropped": 4}, "patients": {"count": 50, "from": "csv"}})
    assert resolved == []  # dropping the copies resolves the duplicates
