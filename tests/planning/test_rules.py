"""The rules: candidates, epochs from the rung, choices and the one-line refusals. The
rates are given here (the timing itself is tested in test_rates.py)."""

from __future__ import annotations

import pytest

from medpipe import PipelineError
from medpipe.planning import rules
from medpipe.planning.fingerprint import Fingerprint
from medpipe.planning.rates import Candidate


def fp(n_train=4708, n_val=524, size=28, native=28, counts=(1214, 3494)) -> Fingerprint:
    return Fingerprint("binary", ["a", "b"], 1, size, native,
                       {"train": n_train, "val": n_val, "test": 600},
                       dict(zip("ab", counts, strict=True)), {"a": 5, "b": 5}, [0.5], [0.2])


# images/s inversely proportional to a candidate's cost; speed(2.8e5): ResNet-18 at 48 px
# at about 120 images/s, as on the benchmark CPU
def speed(scale: float):
    return lambda cand, batch: scale / rules._cost(cand)[0]


def test_candidates_are_cheapest_first_and_capped_by_the_native_side() -> None:
    names = [c.name for c in rules.candidates(fp(), "cpu")]
    assert names[0] == "cnn at 28 px"
    assert "resnet18 at 48 px" in names and "resnet18 at 64 px" not in names  # 2 x 28
    assert names[-1] == "resnet18 small stem at 28 px"
    gpu = rules.candidates(fp(size=128, native=256), "cuda")
    assert Candidate("resnet50", 224) in gpu and Candidate("resnet18", 32) not in gpu


def test_more_compute_buys_a_costlier_candidate() -> None:
    slow = rules.choose(fp(), "cpu", 10, speed(2.8e5))
    fast = rules.choose(fp(), "cpu", 10, speed(2.8e7))
    assert rules._cost(fast.chosen.candidate) > rules._cost(slow.chosen.candidate)
    assert slow.chosen.epochs >= rules.MIN_EPOCHS and fast.chosen.epochs >= rules.MIN_EPOCHS
    # timing stops at the first candidate that no longer fits MIN_EPOCHS
    assert len(rules.choose(fp(), "cpu", 2, speed(2.8e5)).trials) == 2
    assert (slow.chosen.candidate.name, slow.chosen.epochs) == ("resnet18 at 48 px", 13)


def test_rates_within_one_rung_give_the_same_plan() -> None:
    a = rules.choose(fp(), "cpu", 10, speed(2.80e5))
    b = rules.choose(fp(), "cpu", 10, speed(2.83e5))
    assert a.choices == b.choices


def test_choices_follow_balance_and_length() -> None:
    plan = rules.choose(fp(), "cpu", 10, speed(2.8e5))
    assert plan.choices["train.balance"][0] == "loss"  # 1214 : 3494
    assert plan.choices["train.batch_size"][0] == 64
    assert 0.9 <= plan.choices["train.ema"][0] < 1
    balanced = rules.choose(fp(counts=(2000, 2708)), "cpu", 10, speed(2.8e5))
    assert balanced.choices["train.balance"][0] == "none"
    small = fp(n_train=100, n_val=20, counts=(50, 50))
    assert rules.batch_size(small, "cpu") == 8
    assert all(why for _, why in plan.choices.values())


def test_no_candidate_fits_ten_epochs_gives_the_cheapest() -> None:
    plan = rules.choose(fp(), "cpu", 1, speed(2e4))
    assert plan.chosen.candidate.model == "cnn" and 1 <= plan.chosen.epochs < 10


def test_a_budget_too_small_for_one_epoch_says_what_it_needs() -> None:
    with pytest.raises(PipelineError, match=r"'plan.budget_minutes' 0.01 is too small: one "
                       r"epoch .* needs [\d.]+ minutes; set at least [\d.]+ \(stage plan\)"):
        rules.choose(fp(), "cpu", 0.01, speed(2.8e5))


def test_a_class_smaller_than_a_batch_is_refused() -> None:
    with pytest.raises(PipelineError, match=r"class 'a' has 3 training images; a plan needs "
                       r"at least 8 per class .* add 5 or more"):
        rules.check_trainable(fp(n_train=100, counts=(3, 97)), "data/prepared")
    tiny_val = fp()
    tiny_val.val_counts["a"] = 0
    with pytest.raises(PipelineError, match="no validation image"):
        rules.check_trainable(tiny_val, "data/prepared")
