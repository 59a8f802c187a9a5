"""The search: its space, its layout within the budget, and successive halving. Trials
are given here as a function of the configuration (real trials: test_plan_stage.py)."""

from __future__ import annotations

import math

import pytest
from test_rules import fp

from medpipe.planning import rules, search
from medpipe.planning.rates import Candidate

CANDIDATES = [Candidate("cnn", 28), Candidate("resnet18", 32), Candidate("resnet18", 48)]
COST = {Candidate("cnn", 28): 1.0, Candidate("resnet18", 32): 4.0,
        Candidate("resnet18", 48): 9.0, Candidate("resnet18", 28, True): 12.0}


def per_epoch(candidate: Candidate, n_images: int) -> float:
    return COST[candidate] * n_images / 1000


def pool(task: str = "binary") -> list[search.Config]:
    fits = [rules.Timed(c, 100.0, 90.5, 20) for c in CANDIDATES]
    return search.space(fp(task=task), CANDIDATES, rules.anchors(fp(task=task), fits))


def test_the_space_starts_with_the_anchors_and_is_the_same_every_time() -> None:
    configs = pool()
    assert [c.origin for c in configs[:2]] == [
        "rules: the costliest model that fits, the hand recipes' settings",
        "params.yaml's default"]
    # the paper's small-stem ResNet-18 is not among the fitting candidates: left out
    assert all(c.candidate in CANDIDATES for c in configs)
    assert configs == pool() and len(configs) > search.MAX_CONFIGS
    sampled = configs[2:]
    assert {c.candidate for c in sampled} == set(CANDIDATES)  # the Sobol points cover them
    assert {c.balance for c in sampled} == set(search.BALANCE)
    assert all(search.LR[0] <= c.lr <= search.LR[1] for c in sampled)
    assert len({search.replace(c, origin="") for c in configs}) == len(configs)
    assert "sampler" not in {c.balance for c in pool("multilabel")}


def test_the_layout_prefers_many_configurations_of_two_epochs() -> None:
    big = search.layout(fp(), pool(), per_epoch, 10_000)
    assert len(big.configs) == search.MAX_CONFIGS and big.first_epochs == 5
    assert big.trial_images == search.TRIAL_IMAGES  # 4708 training images
    mid = search.layout(fp(), pool(), per_epoch, 900)
    assert search.MIN_CONFIGS <= len(mid.configs) < search.MAX_CONFIGS
    assert mid.first_epochs == 2
    # the estimate holds: the first rung, and the costliest third again at ETA x epochs
    costs = sorted((per_epoch(c.candidate, mid.trial_images) for c in mid.configs),
                   reverse=True)
    promoted = math.ceil(len(costs) / search.ETA)
    assert mid.first_epochs * (sum(costs) + search.ETA * sum(costs[:promoted])) <= 900
    with pytest.raises(search.TooSmall):
        search.layout(fp(), pool(), per_epoch, 20)


def test_halving_promotes_the_best_third_and_the_best_of_them_wins() -> None:
    layout = search.layout(fp(), pool(), per_epoch, 10_000)
    quality = {id(c): (k * 7919) % 12 / 12 for k, c in enumerate(layout.configs)}

    def train(config, epochs):  # a score that grows with the epochs, ranked by config
        q = quality[id(config)] + epochs / 100
        return q, q

    done = search.run(layout, train, per_epoch)
    first = [t for t in done.trials if t.rung == 0]
    second = [t for t in done.trials if t.rung == 1]
    assert len(first) == 12 and len(second) == 4 and {t.epochs for t in second} == {15}
    best_third = sorted(first, key=lambda t: -t.score)[:4]
    assert [t.config for t in second] == [t.config for t in best_third]
    assert [t.winner for t in done.trials].count(True) == 1
    assert done.winner.score == max(t.score for t in second)
    assert done.planned_seconds == pytest.approx(sum(
        t.epochs * per_epoch(t.config.candidate, layout.trial_images) for t in done.trials))
    row = done.trials[0].as_dict()
    assert {"trial", "origin", "rung", "epochs", "model", "lr", "val_auc", "val_accuracy",
            "score", "planned_seconds", "seconds", "winner"} <= set(row)


def test_a_degenerate_trial_ranks_last() -> None:
    assert search.Trial(0, pool()[0], 0, 1, 1.0, math.nan, 0.9).score == -math.inf
