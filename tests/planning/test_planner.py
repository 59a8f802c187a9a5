"""The planner's decisions that need no training: which models the search keeps within
the budget, and when a bf16 winner is checked against fp32. Rates and trials are given
here (the end-to-end plan is test_plan_stage.py's)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_rules import fp, speed

from medpipe.planning import planner, rules, search
from medpipe.planning.rates import Candidate


@pytest.mark.parametrize("shape", [
    {}, {"n_train": 600, "n_val": 100, "counts": (300, 300)},
    {"n_train": 3000, "n_val": 300, "size": 64, "native": 400, "counts": (1500, 1500)}])
@pytest.mark.parametrize("scale", [2.8e5, 2.8e6])
def test_a_budget_larger_than_one_that_plans_also_plans(shape, scale) -> None:
    """A larger budget admits a costlier rules' choice; where the search's trials do not
    fit with it, the search drops it instead of refusing the budget."""
    data = fp(**shape)

    def search_at(minutes: float) -> search.Search | None:
        usable = minutes * 60 * (rules.USABLE - 0.1)
        timed = rules.time_candidates(data, "cpu", usable * (1 - search.SEARCH_SHARE),
                                      speed(scale))
        rung_of = {t.candidate: t.rung for t in timed}
        try:
            return planner.laid_out(data, rules.fitting(timed),
                                    lambda c, n: rules.per_epoch(data, rung_of[c], n),
                                    usable, rules.batch_size(data, "cpu"))
        except search.TooSmall:
            return None

    budgets = [0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 8, 10, 15]
    layouts = [search_at(b) for b in budgets]
    first = next(k for k, s in enumerate(layouts) if s is not None)
    assert all(s is not None for s in layouts[first:]), budgets[first]
    assert first < len(budgets) - 1


def test_a_bf16_winner_is_checked_against_fp32_where_the_budget_holds_it() -> None:
    data = fp(n_train=1000, n_val=200, counts=(500, 500))
    bf16 = Candidate("resnet18", 48, precision="bf16")
    rate = {bf16: 200.0, replace(bf16, precision="auto"): 100.0, Candidate("cnn", 28): 1e4}

    def per_epoch(candidate, n_images):
        return rules.per_epoch(data, rate[candidate], n_images)

    def searched() -> search.Search:
        base = rules.recipe_config(data, bf16)
        s = search.Search([base], 1, 1000, ("binary", 200, (100, 100)))
        s.trials.append(search.Trial(0, base, 1, 3, 3 * per_epoch(bf16, 1000), 0.9, 0.9,
                                     0.03, winner=True))
        return s

    trained = []

    def train(config, epochs):
        trained.append((config.candidate.precision, epochs))
        return 0.9, 0.9

    fp32_epoch = per_epoch(replace(bf16, precision="auto"), 1000)  # 10.7 s
    # past the trials' 16 s, the check (3 fp32 epochs) and 10 fp32 epochs after it: 13
    tight = searched()
    why = planner.checked_precision(data, tight, train, per_epoch, 16 + 12 * fp32_epoch)
    assert "holds no check" in why and not trained and tight.winner.number == 0
    roomy = searched()
    why = planner.checked_precision(data, roomy, train, per_epoch, 16 + 14 * fp32_epoch)
    assert trained == [("auto", 3)] and len(roomy.trials) == 2
    assert roomy.winner.number == 1 and "trial 0 in bf16 did not beat trial 1" in why
    plain = searched()
    plain.trials[0] = replace(plain.trials[0], config=search.in_default_precision(
        plain.trials[0].config))
    assert "default" in planner.checked_precision(data, plain, train, per_epoch, 1e6)
