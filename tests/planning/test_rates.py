"""Timing real training steps of candidates on the CPU, and the rung ladder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from planstores import make_store

from medpipe.data import store
from medpipe.params.sections import AugmentParams
from medpipe.planning import rates
from medpipe.task import from_meta


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """60 images of 16 px, 2 : 1 normal to opacity."""
    return make_store(tmp_path_factory.mktemp("store"), [40, 20])


def test_rung_is_a_sqrt2_ladder() -> None:
    assert rates.rung(100) == 2 ** 6.5  # 90.5
    assert rates.rung(110) == 128 and rates.rung(150) == 128 and rates.rung(160) == 2 ** 7.5
    assert rates.rung(0) == 0


def test_measure_times_real_steps_and_resizes_in_the_model(tiny_store) -> None:
    stats = store.read_stats(tiny_store)
    train = store.load_split(tiny_store, "train")
    task = from_meta(stats)
    cpu = torch.device("cpu")
    small = rates.measure(rates.Candidate("cnn", 16), stats, train, task, cpu, 8, 2)
    large = rates.measure(rates.Candidate("resnet18", 64), stats, train, task, cpu, 8, 2)
    assert small > 0 and large > 0
    assert rates.arch_for(rates.Candidate("resnet18", 64), stats)["input_size"] == 64
    assert "input_size" not in rates.arch_for(rates.Candidate("cnn", 16), stats)


def test_a_timed_step_augments_and_updates_the_weight_average(tiny_store, monkeypatch) -> None:
    """The rate is that of the loop's whole step, not of forward and backward alone: a
    plan that timed less would give more epochs than the budget holds."""
    stats = store.read_stats(tiny_store)
    train = store.load_split(tiny_store, "train")
    calls = {"augment": 0, "average": 0}
    real_augmenter, real_ema = rates.augmenter, rates.make_ema

    def augmenter(model, cfg, gen):  # the training loop's augmentation, counted
        augment = real_augmenter(model, cfg, gen)
        def counted(x):
            calls["augment"] += 1
            return augment(x)
        return counted

    def make_ema(model, decay):
        ema = real_ema(model, decay)
        update = ema.update_parameters
        def counted(m):
            calls["average"] += 1
            update(m)
        ema.update_parameters = counted
        return ema

    monkeypatch.setattr(rates, "augmenter", augmenter)
    monkeypatch.setattr(rates, "make_ema", make_ema)
    cnn = rates.Candidate("cnn", 16)
    args = (stats, train, from_meta(stats), torch.device("cpu"), 8, 3)
    rates.measure(cnn, *args)
    assert calls == {"augment": 0, "average": 0}
    rates.measure(cnn, *args, AugmentParams(affine_p=0.5), average=True)
    assert calls == {"augment": rates.WARMUP + 3, "average": rates.WARMUP + 3}
