"""The rules: candidates, which fit the budget, the anchors, the winner's keys and the
one-line refusals. The rates are given here (the timing itself is tested in
test_rates.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medpipe import PipelineError
from medpipe.planning import rules, search, trials
from medpipe.planning.fingerprint import Fingerprint
from medpipe.planning.rates import Candidate


def fp(n_train=4708, n_val=524, size=28, native=28, counts=(1214, 3494),
       task="binary") -> Fingerprint:
    return Fingerprint(task, ["a", "b"], 1, size, native, {"train": n_train, "val": n_val},
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
    # the source's side bounds the sides, not the side params.yaml asks for
    big = [c.input_size for c in rules.candidates(fp(size=64, native=512), "cpu")]
    assert sorted(set(big)) == [32, 48, 64, 96, 128, 160, 224]
    assert sorted({c.input_size for c in rules.candidates(fp(size=64, native=28), "cpu")}
                  ) == [32, 48, 64]


def test_a_side_params_yaml_sets_is_the_only_side_searched() -> None:
    """The prepare stage keeps a side params.yaml sets over the plan's, so a plan at
    another side would train at a side it was not sized for."""
    fixed = replace(fp(size=28, native=28), side_set=True)
    assert {c.input_size for c in rules.candidates(fixed, "cpu")} == {28}
    assert [c.name for c in rules.candidates(fixed, "cpu")] == [
        "cnn at 28 px", "resnet18 at 28 px", "resnet18 small stem at 28 px"]
    big = replace(fp(size=128, native=512), side_set=True)
    assert {c.input_size for c in rules.candidates(big, "cuda")} == {128}
    assert rules.top_side(128, 512, side_set=True) == 128 and rules.top_side(128, 512) == 224
    keys = rules.decide(fixed, rules.paper_config(fixed), 12, 64, "cpu", "the best trial")
    assert keys["prepare.image_size"] == (28, "params.yaml's prepare.image_size, the only "
                                               "side searched")


def test_timing_stops_at_the_first_candidate_whose_final_training_does_not_fit() -> None:
    seconds = 10 * 60 * rules.USABLE * (1 - search.SEARCH_SHARE)
    slow = rules.time_candidates(fp(), "cpu", seconds, speed(2.8e5))
    fast = rules.time_candidates(fp(), "cpu", seconds, speed(2.8e7))
    assert len(fast) > len(slow)
    assert slow[-1].final_epochs < rules.MIN_EPOCHS <= slow[-2].final_epochs
    fits = rules.fitting(slow)
    assert all(t.final_epochs >= rules.MIN_EPOCHS for t in fits) and fits == slow[:-1]
    # none fits: the cheapest alone
    assert rules.fitting(rules.time_candidates(fp(), "cpu", 5, speed(2e4))) == [
        rules.time_candidates(fp(), "cpu", 5, speed(2e4))[0]]


def test_rates_within_one_rung_give_the_same_candidates() -> None:
    a = rules.time_candidates(fp(), "cpu", 300, speed(2.80e5))
    b = rules.time_candidates(fp(), "cpu", 300, speed(2.83e5))
    assert [(t.candidate, t.rung, t.final_epochs) for t in a] == [
        (t.candidate, t.rung, t.final_epochs) for t in b]


def test_the_anchors_are_the_rules_choice_the_paper_model_and_the_default() -> None:
    fits = rules.fitting(rules.time_candidates(fp(), "cpu", 300, speed(2.8e5)))
    first, paper, default = rules.anchors(fp(), fits)
    assert first.candidate == fits[-1].candidate and first.balance == "loss"  # 1214 : 3494
    assert (default.candidate, default.optimizer, default.affine_p) == (
        Candidate("cnn", 28), "adam", 0.0)
    assert (paper.candidate, paper.lr) == (Candidate("resnet18", 28, True), 0.001)
    assert rules.paper_config(fp(size=128, native=128)).candidate == Candidate("resnet18", 128)
    assert rules.balance(fp(counts=(2000, 2708)))[0] == "none"


def test_the_winners_keys_follow_its_configuration_and_length() -> None:
    winner = rules.recipe_config(fp(), Candidate("resnet18", 48))
    keys = rules.decide(fp(), winner, 12, 64, "cpu", "the best trial")
    assert keys["train.model"][0] == "resnet18" and keys["prepare.image_size"][0] == 48
    assert keys["train.epochs"][0] == 12 and keys["train.batch_size"][0] == 64
    assert keys["train.balance"][0] == "loss" and keys["augment.affine_p"][0] == 0.5
    assert keys["train.ema"][0] == 0.989  # 1 - 1 / (0.1 x 12 x 74 steps)
    assert keys["train.warmup_epochs"][0] == 2.4
    plain = rules.decide(fp(), rules.default_config(fp()), 12, 64, "cpu", "the best trial")
    assert plain["train.ema"][0] == 0.0 and plain["train.optimizer"][0] == "adam"
    assert all(why for _, why in keys.items())
    assert rules.batch_size(fp(n_train=100, n_val=20, counts=(50, 50)), "cpu") == 8
    assert rules.warmup_epochs(1, 5) == 0.4  # two of the five steps


def test_the_paper_configuration_trains_without_warm_up_in_its_trials_and_as_winner() -> None:
    paper = rules.paper_config(fp(size=64, native=64))
    keys = rules.decide(fp(size=64, native=64), paper, 12, 64, "cpu", "the best trial")
    assert keys["train.warmup_epochs"] == (0.0, "the best trial: no warm-up")
    cfg, _ = trials.trial_params(paper, 3, 64, "cpu", fp(size=64, native=64))
    assert (cfg.schedule, cfg.warmup_epochs) == ("cosine", 0.0)
    drawn, _ = trials.trial_params(replace(paper, warmup=True), 3, 64, "cpu", fp())
    assert drawn.warmup_epochs == 0.6  # a fifth of three epochs
    assert paper.as_dict()["warmup"] is False


def test_a_class_smaller_than_a_batch_is_refused() -> None:
    with pytest.raises(PipelineError, match=r"class 'a' has 3 training images; a plan needs "
                       r"at least 8 per class .* add 5 or more"):
        rules.check_trainable(fp(n_train=100, counts=(3, 97)), "data/prepared")
    tiny_val = fp()
    tiny_val.val_counts["a"] = 0
    with pytest.raises(PipelineError, match="no validation image"):
        rules.check_trainable(tiny_val, "data/prepared")


def test_bf16_is_a_candidate_where_it_is_a_rung_faster() -> None:
    def speed_bf16(cand, batch):  # bf16 twice as fast from 48 px up, slower below
        rate = 2.8e5 / rules._cost(replace(cand, precision="auto"))[0]
        if cand.precision == "bf16":
            return rate * (2.0 if cand.input_size >= 48 else 0.7)
        return rate

    timed = rules.time_candidates(fp(), "cpu", 300, speed_bf16, bf16=True)
    names = [t.candidate.name for t in timed]
    assert names[:2] == ["cnn at 28 px", "cnn bf16 at 28 px"]  # each timed both ways
    searched = {t.candidate.name for t in rules.fitting(timed)}
    # 48 px fits the final training only in bf16
    assert "resnet18 bf16 at 48 px" in searched and "resnet18 at 48 px" not in searched
    assert "resnet18 bf16 at 32 px" not in searched  # slower than fp32: not searched
    bf16 = next(t for t in rules.fitting(timed) if t.candidate.precision == "bf16")
    keys = rules.decide(fp(), rules.recipe_config(fp(), bf16.candidate), 12, 64, "cpu", "x")
    assert keys["train.precision"][0] == "bf16"
    fp32 = rules.decide(fp(), rules.default_config(fp()), 12, 64, "cpu", "x")
    assert fp32["train.precision"][0] == "auto"
