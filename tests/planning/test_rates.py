"""Timing real training steps of candidates on the CPU, and the rung ladder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from planstores import make_store

from medpipe.data import store
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.planning import rates
from medpipe.training import setup


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """60 images of 16 px, 2 : 1 normal to opacity."""
    return make_store(tmp_path_factory.mktemp("store"), [40, 20])


def measure(store_dir: Path, candidate: rates.Candidate, aug: AugmentParams, ema: float,
            steps: int = 2) -> float:
    stats = store.read_stats(store_dir)
    train, val = store.load_split(store_dir, "train"), store.load_split(store_dir, "val")
    cfg = TrainParams(model=candidate.model, batch_size=8, ema=ema, device="cpu")
    return rates.measure(candidate, cfg, aug, stats, train, val, store_dir,
                         torch.device("cpu"), steps)


def test_rung_is_a_sqrt2_ladder() -> None:
    assert rates.rung(100) == 2 ** 6.5  # 90.5
    assert rates.rung(110) == 128 and rates.rung(150) == 128 and rates.rung(160) == 2 ** 7.5
    assert rates.rung(0) == 0


def test_a_larger_side_is_never_faster_than_a_smaller_one() -> None:
    r32, r64, cnn = (rates.Candidate("resnet18", 32), rates.Candidate("resnet18", 64),
                     rates.Candidate("cnn", 64))
    out = rates.monotone({r32: 74.0, r64: 176.0, cnn: 900.0})
    assert out == {r32: 74.0, r64: 74.0, cnn: 900.0}  # another model is not compared
    assert rates.monotone({r32: 176.0, r64: 74.0}) == {r32: 176.0, r64: 74.0}


def test_measure_times_the_training_loops_own_step(tiny_store, monkeypatch) -> None:
    """The rate is that of the loop's whole step, built by the loop's own setup: the
    augmentation and the weight average's update are in it."""
    calls = {"augment": 0, "average": 0}
    real_augmenter, real_ema = setup.augmenter, setup.make_ema

    def augmenter(augment, gen):
        inner = real_augmenter(augment, gen)

        def counted(x):
            calls["augment"] += 1
            assert x.shape[-1] == 16 and inner(x).shape[-1] == 16  # the store's side
            return inner(x)
        return counted

    def make_ema(model, decay):
        ema = real_ema(model, decay)
        if ema is None:
            return None
        update = ema.update_parameters

        def counted(m):
            calls["average"] += 1
            update(m)
        ema.update_parameters = counted
        return ema

    monkeypatch.setattr(setup, "augmenter", augmenter)
    monkeypatch.setattr(setup, "make_ema", make_ema)
    plain = measure(tiny_store, rates.Candidate("cnn", 16), AugmentParams(), 0.0, steps=3)
    assert plain > 0 and calls == {"augment": 0, "average": 0}
    rate = measure(tiny_store, rates.Candidate("resnet18", 16), AugmentParams(affine_p=0.5),
                   0.99, steps=3)
    assert rate > 0
    assert calls == {"augment": rates.WARMUP + 3, "average": rates.WARMUP + 3}
