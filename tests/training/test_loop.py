"""The training engine: devices, batching, fitting, best-epoch restore, determinism."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from augmentparams import augment_cfg
from torch import nn

from medpipe import PipelineError
from medpipe.data import loader
from medpipe.data.store import Split
from medpipe.inference import predictor
from medpipe.models import architectures
from medpipe.params.loading import parse_section
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.task import MultiClass
from medpipe.training import loop, optim
from medpipe.training.state import Resume
from medpipe.utils import devices, seeding

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"

CPU = torch.device("cpu")
SIZE = 16


@pytest.fixture(autouse=True)
def _restore_global_torch_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """seed_everything flips process-wide switches; put them back after each test."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG",
                                                                 ":4096:8"))
    state = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    rng_state = torch.get_rng_state()
    yield
    now = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    if now != state:
        torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    torch.set_rng_state(rng_state)


def make_cfg(**changes: Any) -> TrainParams:
    """The committed params.yaml's train section with small-test overrides."""
    values: dict[str, Any] = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["train"]
    values.update({"dropout": 0.0, "lr": 0.01, "batch_size": 16, "epochs": 3,
                   "monitor": "val_loss", "seed": 0, "device": "cpu",
                   "schedule": "constant", "warmup_epochs": 0})
    values.update(changes)
    return parse_section("train", values, stage="train")


def dark_vs_bright(n: int, seed: int, separation: float = 60.0) -> Split:
    """Class 0: darker images, class 1: brighter ones, with overlapping pixel noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 2
    base = np.where(labels == 1, 128 + separation / 2, 128 - separation / 2)
    images = base[:, None, None, None] + rng.normal(0.0, 40.0, (n, 1, SIZE, SIZE))
    return Split(images=np.clip(np.rint(images), 0, 255).astype(np.uint8), labels=labels)


def new_model() -> architectures.Classifier:
    arch = {"name": "cnn", "in_channels": 1, "num_classes": 2, "image_size": SIZE,
            "width_mult": 1.0, "dropout": 0.0, "mean": [0.5], "std": [0.2]}
    return architectures.build_model(arch)


# -------------------------------------------------------------------------------- devices


def test_auto_device_is_cpu_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: auto picks it")
    assert devices.resolve_device("auto") == CPU
    assert devices.resolve_device("cpu") == CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_pipeline_error(name: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(PipelineError, match="CUDA is not available"):
        devices.resolve_device(name)


def test_unknown_device_is_a_pipeline_error() -> None:
    with pytest.raises(PipelineError, match="unknown device 'nonsense'"):
        devices.resolve_device("nonsense")


# -------------------------------------------------------------------------------- Batches


def numbered_split(n: int) -> Split:
    """Image i is filled with the value i and has label i, to follow indices through."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                             (n, 1, 2, 2)).copy()
    return Split(images=images, labels=np.arange(n, dtype=np.int64))


def epoch_order(batches: loader.Batches) -> list[int]:
    order: list[int] = []
    for x, y in batches:
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with their labels
        order += y.tolist()
    return order


def test_batches_cover_every_index_once_per_epoch() -> None:
    batches = loader.Batches(numbered_split(10), 3, shuffle=True, seed=0)
    assert len(batches) == 4
    assert [len(y) for _, y in batches] == [3, 3, 3, 1]
    for _ in range(3):
        assert sorted(epoch_order(batches)) == list(range(10))


def test_unshuffled_batches_keep_the_order() -> None:
    batches = loader.Batches(numbered_split(7), 4, shuffle=False)
    assert epoch_order(batches) == list(range(7))
    assert epoch_order(batches) == list(range(7))


def test_shuffle_differs_between_epochs_and_is_reproducible() -> None:
    a = loader.Batches(numbered_split(50), 8, shuffle=True, seed=1)
    b = loader.Batches(numbered_split(50), 8, shuffle=True, seed=1)
    c = loader.Batches(numbered_split(50), 8, shuffle=True, seed=2)
    orders_a = [epoch_order(a) for _ in range(3)]
    orders_b = [epoch_order(b) for _ in range(3)]
    orders_c = [epoch_order(c) for _ in range(3)]
    assert orders_a == orders_b
    assert orders_a[0] != orders_a[1] != orders_a[2]
    assert orders_a != orders_c
    assert orders_a[0] != list(range(50))


def test_batches_do_not_depend_on_the_global_torch_rng() -> None:
    torch.manual_seed(0)
    a = epoch_order(loader.Batches(numbered_split(30), 8, shuffle=True, seed=4))
    torch.manual_seed(99)
    b = epoch_order(loader.Batches(numbered_split(30), 8, shuffle=True, seed=4))
    assert a == b


# ------------------------------------------------------------------------------------ fit


def test_fit_learns_an_easy_task() -> None:
    seeding.seed_everything(0)
    train, val = dark_vs_bright(64, seed=1), dark_vs_bright(32, seed=2)
    model = new_model()
    seen: list[tuple[int, dict[str, float]]] = []
    result = loop.fit(model, train, val, make_cfg(epochs=3, monitor="val_accuracy"), CPU,
                        on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert len(result.history) == 3
    assert set(result.history[0]) == {"train_loss", "train_accuracy", "train_lr", "val_loss",
                                      "val_accuracy", "val_balanced_accuracy", "val_auc"}
    assert result.best["val_accuracy"] >= 0.9
    assert result.best["val_auc"] >= 0.95
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best == {k: v for k, v in result.history[result.best_epoch - 1].items()
                           if k.startswith("val_")}
    # The returned model reproduces the best epoch's validation figures.
    again = loop.evaluate(model, loader.Batches(val, 32, shuffle=False), CPU)
    assert again["accuracy"] == result.best["val_accuracy"]
    assert again["balanced_accuracy"] == result.best["val_balanced_accuracy"]
    assert again["loss"] == pytest.approx(result.best["val_loss"], rel=1e-6, abs=1e-9)
    assert result.seconds > 0 and result.images_per_second > 0


def test_fit_reports_the_run_and_each_epoch_with_elapsed_and_eta(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a log (no terminal): the whole run's progress after every batch here (the
    interval is tiny), and each epoch's line with its time, the elapsed time and ETA."""
    monkeypatch.setenv("MEDPIPE_PROGRESS_SECONDS", "0.000001")
    train = dark_vs_bright(32, seed=1)
    with caplog.at_level("INFO"):
        loop.fit(new_model(), train, train, make_cfg(epochs=2, batch_size=8), CPU)
    epochs = [r.getMessage() for r in caplog.records if r.name == "medpipe.training.loop"
              and r.getMessage().startswith("epoch ")]
    assert len(epochs) == 2
    assert all(re.search(r"\(\d+\.\d s; elapsed \d:\d\d, ETA \d:\d\d\)$", e) for e in epochs)
    run = [r.getMessage() for r in caplog.records if r.name == "medpipe.progress"]
    assert run[0].startswith("train: epoch 1/2, 1/8 batch (12%), elapsed 0:0")
    assert run[-1].startswith("train: epoch 2/2, 8/8 batch (100%), elapsed 0:0")


def test_weight_average_is_what_is_validated_and_kept() -> None:
    """train.ema: the training trajectory is untouched (same train losses); validation
    scores the average, and the returned model is the best epoch's average."""
    train, val = dark_vs_bright(64, seed=1), dark_vs_bright(32, seed=2)
    runs = {}
    for ema in (0.0, 0.8):
        seeding.seed_everything(0)
        model = new_model()
        runs[ema] = (model, loop.fit(model, train, val, make_cfg(epochs=3, ema=ema), CPU))
    (plain, r0), (averaged, r1) = runs[0.0], runs[0.8]
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r0.history]
    assert [h["val_loss"] for h in r1.history] != [h["val_loss"] for h in r0.history]
    again = loop.evaluate(averaged, loader.Batches(val, 32, shuffle=False), CPU)
    assert again["loss"] == pytest.approx(r1.best["val_loss"], rel=1e-6, abs=1e-9)
    assert not all(torch.equal(a, b) for a, b in
                   zip(plain.state_dict().values(), averaged.state_dict().values(), strict=True))


def test_weight_average_is_the_normalised_exponential_average() -> None:
    """After weights w_1..w_n the average is sum d^(n-i) w_i / sum d^(n-i): the first,
    barely trained weights do not linger (a copy of w_1 decayed by d per step would still
    hold 0.99^2 = 98% after 3 steps). Batch-norm's integer batch count is the latest."""
    decay = 0.99
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    ema = optim.make_ema(model, decay)
    steps = [1.0, 2.0, 4.0, 8.0]
    for n, value in enumerate(steps, start=1):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].num_batches_tracked.fill_(10 * n)
        ema.update_parameters(model)
        shares = [decay ** (n - i) for i in range(1, n + 1)]
        expected = sum(w * s for w, s in zip(steps, shares, strict=False)) / sum(shares)
        averaged = ema.module[0].weight
        assert torch.allclose(averaged, torch.full_like(averaged, expected), atol=1e-6)
        assert int(ema.module[1].num_batches_tracked) == 10 * n
    # In a long run it is the plain exponential average: the earliest steps are gone.
    for _ in range(2000):
        ema.update_parameters(model)
    assert torch.allclose(ema.module[0].weight, model[0].weight, atol=1e-6)


def test_fit_restores_the_best_epoch_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation scores are scripted so epoch 2 of 4 is the best by val_auc."""
    scripted = iter([0.60, 0.90, 0.70, 0.80])
    real_evaluate = loop.evaluate

    def evaluate(model: Any, batches: Any, device: Any, speed: Any = None) -> dict[str, float]:
        return {**real_evaluate(model, batches, device), "auc": next(scripted)}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    model = new_model()
    seeding.seed_everything(0)
    result = loop.fit(
        model, dark_vs_bright(32, 1), dark_vs_bright(16, 2),
        make_cfg(epochs=4, monitor="val_auc", lr=0.05), CPU,
        on_epoch=lambda e, m: snapshots.__setitem__(e, copy.deepcopy(model.state_dict())),
    )
    assert result.best_epoch == 2
    assert result.best["val_auc"] == 0.90
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[4][k]) for k in final)


@pytest.mark.parametrize(
    ("monitor", "values", "best"),
    [("val_loss", [0.5, 0.3, 0.4], 2), ("val_accuracy", [0.5, 0.7, 0.7], 2),
     ("val_balanced_accuracy", [0.6, 0.8, 0.7], 2),
     ("val_auc", [float("nan"), 0.6, 0.5], 2), ("val_auc", [0.6, float("nan"), 0.5], 1)],
)
def test_is_better_picks_the_first_best(monitor: str, values: list[float], best: int) -> None:
    best_value, best_epoch = None, 0
    for epoch, value in enumerate(values, start=1):
        if loop.is_better(monitor, value, best_value):
            best_value, best_epoch = value, epoch
    assert best_epoch == best


def test_same_seed_gives_bit_identical_weights() -> None:
    train, val = dark_vs_bright(48, seed=1), dark_vs_bright(16, seed=2)
    states = []
    for _ in range(2):
        seeding.seed_everything(7)
        model = new_model()
        cfg = make_cfg(epochs=2, seed=7, dropout=0.0)
        loop.fit(model, train, val, cfg, CPU)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    # And a different seed really gives different weights.
    seeding.seed_everything(8)
    other = new_model()
    loop.fit(other, train, val, make_cfg(epochs=2, seed=8), CPU)
    assert not torch.equal(other.state_dict()["net.features.0.weight"],
                           states[0]["net.features.0.weight"])


def test_huge_learning_rate_diverges_with_a_pipeline_error() -> None:
    seeding.seed_everything(0)
    with pytest.raises(PipelineError, match=r"diverged: .* loss is (nan|inf)"):
        loop.fit(new_model(), dark_vs_bright(64, 1), dark_vs_bright(16, 2),
                   make_cfg(optimizer="sgd", lr=1e12, epochs=3), CPU)


def test_nan_inputs_fail_with_a_pipeline_error_about_the_loss() -> None:
    good = dark_vs_bright(32, 1)
    images = good.images.astype(np.float32)  # Batches takes any numeric array
    images[5, 0, 3, 3] = np.nan
    poisoned = Split(images=images, labels=good.labels)
    seeding.seed_everything(0)
    with pytest.raises(PipelineError) as info:
        loop.fit(new_model(), poisoned, dark_vs_bright(16, 2), make_cfg(epochs=1), CPU)
    assert "loss" in str(info.value) and "lr" in str(info.value)


def test_predict_returns_probabilities_in_batch_order() -> None:
    val = dark_vs_bright(20, 3)
    model = new_model()
    probs = predictor.predict(model, loader.Batches(val, 7, shuffle=False), CPU)
    assert probs.shape == (20, 2) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        direct = torch.softmax(model.eval()(torch.from_numpy(val.images).float() / 255.0), 1)
    np.testing.assert_allclose(probs, direct.double().numpy(), atol=1e-6)


def test_make_optimizer_honours_the_choice() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = optim.make_optimizer(make_cfg(optimizer="sgd", lr=0.1, momentum=0.5), params)
    adam = optim.make_optimizer(make_cfg(optimizer="adam", lr=0.2, weight_decay=0.01), params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 0.1 and sgd.defaults["momentum"] == 0.5
    assert isinstance(adam, torch.optim.Adam)
    assert adam.defaults["lr"] == 0.2 and adam.defaults["weight_decay"] == 0.01


def lr_trace(cfg: TrainParams, steps_per_epoch: int = 4) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = optim.make_optimizer(cfg, model.parameters())
    scheduler = optim.make_scheduler(cfg, optimizer, steps_per_epoch)
    trace = []
    for _ in range(cfg.epochs * steps_per_epoch):
        trace.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return trace


def test_schedules_follow_their_shape() -> None:
    constant = lr_trace(make_cfg(schedule="constant", epochs=3, lr=0.1))
    assert constant == [pytest.approx(0.1)] * 12
    warm = lr_trace(make_cfg(schedule="constant", epochs=3, lr=0.1, warmup_epochs=1))
    assert warm[0] == pytest.approx(0.1 / 25) and warm[4:] == [pytest.approx(0.1)] * 8
    assert warm[:4] == sorted(warm[:4])
    step = lr_trace(make_cfg(schedule="step", epochs=4, lr=0.1, step_epochs=2))
    assert step[0] == pytest.approx(0.1) and step[8] == pytest.approx(0.01)
    cosine = lr_trace(make_cfg(schedule="cosine", epochs=4, lr=0.1))
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < 0.01
    assert all(a >= b for a, b in zip(cosine, cosine[1:], strict=False))
    one = lr_trace(make_cfg(schedule="onecycle", epochs=4, lr=0.1, warmup_epochs=1))
    peak = max(range(len(one)), key=one.__getitem__)
    assert one[peak] == pytest.approx(0.1, rel=1e-3) and 3 <= peak <= 5
    assert one[0] < 0.01 and one[-1] < 0.001


def test_onecycle_without_warmup_is_refused() -> None:
    with pytest.raises(PipelineError, match="warmup_epochs"):
        lr_trace(make_cfg(schedule="onecycle", warmup_epochs=0))


def test_onecycle_with_a_one_step_rise_is_refused_not_a_division_by_zero() -> None:
    """One step per epoch (a batch as large as the split) and 'warmup_epochs: 1': the
    rising part has one step, which OneCycleLR cannot lay out."""
    with pytest.raises(PipelineError) as caught:
        lr_trace(make_cfg(schedule="onecycle", epochs=3, warmup_epochs=1), steps_per_epoch=1)
    assert str(caught.value) == (
        "params.yaml: the onecycle schedule needs 'train.warmup_epochs' (its rising part) to "
        "span at least 2 of its 3 steps and fewer than all: got 1.0 epochs x 1 steps per "
        "epoch = 1 step (stage train)")
    two = lr_trace(make_cfg(schedule="onecycle", epochs=3, lr=0.1, warmup_epochs=2),
                   steps_per_epoch=1)
    assert two[0] < two[1] == pytest.approx(0.1) and two[2] < two[1]


def write_store(root: Path, train: Split, val: Split) -> Path:
    """A two-class array store at ``root``, as the prepare stage writes it."""
    from medpipe.data import store

    root.mkdir(parents=True)
    for name, split in (("train", train), ("val", val)):
        np.save(store.images_path(root, name), split.images)
        np.save(store.labels_path(root, name), split.labels)
    pixels = train.images.astype(np.float64) / 255.0
    stats = {"task": "multiclass", "classes": ["dark", "bright"], "image_size": SIZE,
             "channels": 1, "mean": [float(pixels.mean())], "std": [float(pixels.std())]}
    (root / store.STATS).write_text(json.dumps(stats), encoding="utf-8")
    return root


def default_augment() -> AugmentParams:
    """The committed params.yaml's augment section."""
    values = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["augment"]
    return parse_section("augment", values, stage="train")


@pytest.mark.parametrize(("nproc", "batch_size", "advice"), [
    (1, 10000, "use at most 56"),
    (1, 57, "use at most 56"),
    (4, 60, "use at most 56 (a multiple of 'train.nproc' 4)"),
    (3, 10002, "use at most 54 (a multiple of 'train.nproc' 3)"),
])
def test_batch_larger_than_the_training_split_is_refused_before_training(
        tmp_path: Path, nproc: int, batch_size: int, advice: str) -> None:
    """The batch of one step beyond the 56 training images: one line naming the key, the
    value and the store, before any epoch runs and before any output is written."""
    from stages import train as train_stage

    data = write_store(tmp_path / "prepared", dark_vs_bright(56, seed=0),
                       dark_vs_bright(16, seed=1))
    aug = default_augment()
    cfg = make_cfg(batch_size=batch_size, nproc=nproc, schedule="onecycle", epochs=3,
                   warmup_epochs=1)
    with pytest.raises(PipelineError) as caught:
        train_stage.train(cfg, aug, data, tmp_path / "model.pt", tmp_path / "train.json",
                          state_path=tmp_path / "state.pt")
    assert str(caught.value) == (
        f"params.yaml: 'train.batch_size' {batch_size} is larger than the 56 training images "
        f"in {data}; {advice} (stage train)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_batch_of_the_whole_training_split_trains(tmp_path: Path) -> None:
    from stages import train as train_stage

    data = write_store(tmp_path / "prepared", dark_vs_bright(56, seed=0),
                       dark_vs_bright(16, seed=1))
    aug = default_augment()
    summary = train_stage.train(make_cfg(batch_size=56, epochs=2), aug, data,
                                tmp_path / "model.pt", tmp_path / "train.json")
    assert summary["epochs"] == 2 and (tmp_path / "model.pt").is_file()


def test_store_larger_than_the_available_memory_is_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training holds the train and val images in memory: 56 + 16 images of 16 x 16 px
    are 18,432 bytes, here with 10,000 available."""
    from medpipe.data import store
    from stages import train as train_stage

    data = write_store(tmp_path / "prepared", dark_vs_bright(56, seed=0),
                       dark_vs_bright(16, seed=1))
    aug = default_augment()
    monkeypatch.setattr(store, "available_memory", lambda: 10_000)
    with pytest.raises(PipelineError) as caught:
        train_stage.train(make_cfg(epochs=1), aug, data, tmp_path / "model.pt",
                          tmp_path / "train.json")
    assert str(caught.value) == (
        f"{data}: training (its train and val images) needs 0.000018 GB of memory, but only "
        "0.000010 GB is available; lower 'prepare.image_size' or free memory (stage train)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_class_weighted_loss_balances_the_classes() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    loss = optim.make_loss(make_cfg(balance="loss"), MultiClass(["a", "b"]), labels,
                           torch.device("cpu"))
    logits = torch.zeros(2, 2)  # same loss per sample; only the weights differ
    per0 = loss(logits[:1], torch.tensor([0]))
    per1 = loss(logits[:1], torch.tensor([1]))
    torch.testing.assert_close(per0, per1)  # weighted mean over one sample is the sample
    both = loss(logits, torch.tensor([0, 1]))
    expected = torch.nn.functional.cross_entropy(
        logits, torch.tensor([0, 1]), weight=torch.tensor([100 / 180, 100 / 20]))
    torch.testing.assert_close(both, expected)


def test_balanced_sampler_draws_classes_equally() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    split = Split(images=np.zeros((1000, 1, 2, 2), np.uint8), labels=labels)
    batches = loader.Batches(split, 100, shuffle=True, seed=0, balanced=True)
    drawn = torch.cat([y for _, y in batches])
    assert len(drawn) == 1000
    assert 0.45 < drawn.float().mean().item() < 0.55


def test_early_stopping_stops_after_patience() -> None:
    train, val = dark_vs_bright(64, seed=0), dark_vs_bright(32, seed=1)
    seeding.seed_everything(0)
    model = new_model()
    # lr 0: the model never changes, so no epoch after the first one improves.
    result = loop.fit(model, train, val, make_cfg(epochs=20, patience=2, lr=1e-12,
                                                    monitor="val_loss"),
                        torch.device("cpu"))
    assert result.epochs_run == 3 and result.best_epoch == 1


def test_augmentation_changes_training_and_stays_deterministic() -> None:
    train, val = dark_vs_bright(64, seed=0), dark_vs_bright(32, seed=1)
    aug = augment_cfg(affine_p=1.0, rotation=20.0, intensity_p=1.0)

    def run(augment) -> dict[str, torch.Tensor]:
        seeding.seed_everything(0)
        model = new_model()
        loop.fit(model, train, val, make_cfg(epochs=2), torch.device("cpu"), augment=augment)
        return model.state_dict()

    plain, aug_a, aug_b = run(None), run(aug), run(aug)
    assert all(torch.equal(aug_a[k], aug_b[k]) for k in aug_a)
    assert not all(torch.equal(plain[k], aug_a[k]) for k in plain)


class Crash(Exception):
    """Stands in for a run killed after an epoch's state was saved."""


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_a_crash_ends_with_the_uninterrupted_model(tmp_path: Path,
                                                                ema: float) -> None:
    """Kill after epoch 2 of 4, resume: same weights, same history as one straight run,
    with augmentation, a schedule and dropout all drawing random numbers (and the weight
    average, whose state must be resumed too)."""
    train, val = dark_vs_bright(64, seed=0), dark_vs_bright(32, seed=1)
    cfg = make_cfg(epochs=4, dropout=0.3, schedule="cosine", warmup_epochs=1, ema=ema)
    aug = augment_cfg(affine_p=1.0, rotation=20.0, noise_p=0.5)
    state = tmp_path / "state.pt"

    seeding.seed_everything(0)
    straight = new_model()
    expected = loop.fit(straight, train, val, cfg, torch.device("cpu"), augment=aug)

    def crash_after_two(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Crash

    seeding.seed_everything(0)
    with pytest.raises(Crash):
        loop.fit(new_model(), train, val, cfg, torch.device("cpu"), augment=aug,
                   on_epoch=crash_after_two, resume=Resume(state, "run"))
    # The crash hit before epoch 2's state was saved: the state holds epoch 1.
    assert torch.load(state, weights_only=True)["epoch"] == 1

    seen: list[int] = []
    seeding.seed_everything(123)  # a resumed process starts from other RNG states
    resumed = new_model()
    result = loop.fit(resumed, train, val, cfg, torch.device("cpu"), augment=aug,
                        on_epoch=lambda e, m: seen.append(e), resume=Resume(state, "run"))
    assert seen == [1, 2, 3, 4]  # epoch 1 replayed for the logger, then 2-4 trained
    assert result.history == expected.history
    assert result.best_epoch == expected.best_epoch
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_state_from_other_params_is_discarded(tmp_path: Path) -> None:
    train, val = dark_vs_bright(32, seed=0), dark_vs_bright(16, seed=1)
    state = tmp_path / "state.pt"
    seeding.seed_everything(0)
    loop.fit(new_model(), train, val, make_cfg(epochs=1), torch.device("cpu"),
               resume=Resume(state, "old"))
    seeding.seed_everything(0)
    result = loop.fit(new_model(), train, val, make_cfg(epochs=2), torch.device("cpu"),
                        resume=Resume(state, "new"))
    assert result.epochs_run == 2 and len(result.history) == 2
    assert torch.load(state, weights_only=True)["fingerprint"] == "new"


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "pickled code"])
def test_unloadable_state_is_reported_in_one_line_and_training_starts_afresh(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A torn or foreign state file is no reason to stop: like a stale one it is removed
    and training starts from epoch 1; the warning names it and says why it was refused."""
    from torchfiles import CODE, check_refusal, unloadable_files

    path, reason = unloadable_files(tmp_path)[kind]
    state = tmp_path / "state.pt"
    path.rename(state)
    train, val = dark_vs_bright(32, seed=0), dark_vs_bright(16, seed=1)
    seen: list[int] = []
    with caplog.at_level("WARNING", logger="medpipe.training.state"):
        loop.fit(new_model(), train, val, make_cfg(epochs=1), torch.device("cpu"),
                   on_epoch=lambda e, m: seen.append(e), resume=Resume(state, "run"))
    assert seen == [1]
    assert torch.load(state, weights_only=True)["epoch"] == 1  # replaced by this run's
    warnings = [r.getMessage() for r in caplog.records if r.name == "medpipe.training.state"]
    assert len(warnings) == 1, warnings
    refusal, _, rest = warnings[0].partition("; ")
    check_refusal(refusal, state, reason)
    assert rest == "ignored, training starts afresh"
    if reason == CODE:
        assert "not a training state this pipeline wrote" in refusal


def test_half_saved_state_left_by_a_kill_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL during a state save leaves its temporary next to the state; the next run
    resumes from the last whole state and removes the temporary on its first save."""
    train, val = dark_vs_bright(32, seed=0), dark_vs_bright(16, seed=1)
    state = tmp_path / "state.pt"
    seeding.seed_everything(0)
    loop.fit(new_model(), train, val, make_cfg(epochs=1), torch.device("cpu"),
               resume=Resume(state, "run"))
    half = tmp_path / ".tmp-state.pt.k1ll3d"
    half.write_bytes(state.read_bytes()[:100])  # a save cut short
    seen: list[int] = []
    loop.fit(new_model(), train, val, make_cfg(epochs=2), torch.device("cpu"),
               on_epoch=lambda e, m: seen.append(e), resume=Resume(state, "run"))
    assert not half.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    assert torch.load(state, weights_only=True)["epoch"] == 2


def test_bf16_and_channels_last_train_on_cpu() -> None:
    """The CUDA speed path (bf16 autocast, NHWC) runs and learns; here on the CPU."""
    train, val = dark_vs_bright(64, seed=0), dark_vs_bright(32, seed=1)
    cfg = make_cfg(epochs=3, precision="bf16", channels_last=True)
    assert devices.Speed.resolve(cfg, torch.device("cpu")) == devices.Speed(True, True, False,
                                                                           unfold_grad=False)
    seeding.seed_everything(0)
    result = loop.fit(new_model(), train, val, cfg, torch.device("cpu"))
    assert result.best["val_accuracy"] >= 0.9


def test_a_model_trained_in_bf16_is_validated_in_fp32_as_the_test_split_is_scored() -> None:
    """The epoch kept is judged by the numbers the evaluate stage gives (fp32 scoring of
    the fp32 weights autocast keeps), not by a bf16 forward pass."""
    train, val = dark_vs_bright(64, 0, separation=5.0), dark_vs_bright(32, 1, separation=5.0)
    cfg = make_cfg(epochs=1, precision="bf16", channels_last=True)
    seeding.seed_everything(0)
    model = new_model()
    result = loop.fit(model, train, val, cfg, CPU)
    batches = loader.Batches(val, 16, shuffle=False)
    fp32 = loop.evaluate(model, batches, CPU, devices.Speed(channels_last=True))
    bf16 = loop.evaluate(model, batches, CPU, devices.Speed(bf16=True, channels_last=True))
    assert result.best["val_loss"] == pytest.approx(fp32["loss"], rel=1e-6)
    assert bf16["loss"] != pytest.approx(fp32["loss"], rel=1e-6)  # the two passes differ


def test_auto_speed_on_cpu_is_fp32_with_channels_last_and_unfolded_weight_grads() -> None:
    cpu = torch.device("cpu")
    assert devices.Speed.resolve(make_cfg(), cpu) == devices.Speed(channels_last=True,
                                                                 unfold_grad=True)
    assert devices.Speed.resolve(make_cfg(channels_last=False), cpu) == devices.Speed(
        unfold_grad=True)
    # torch.compile traces the model itself: the unfolding is left out of it.
    assert not devices.Speed.resolve(make_cfg(compile=True), cpu).unfold_grad


def test_a_model_file_that_resizes_inside_the_model_is_refused_in_one_line() -> None:
    arch = {"name": "cnn", "in_channels": 1, "num_classes": 2, "image_size": SIZE,
            "width_mult": 1.0, "dropout": 0.0, "mean": [0.5], "std": [0.2],
            "input_size": 2 * SIZE}
    with pytest.raises(PipelineError, match=f"resizes its {SIZE} px input to {2 * SIZE} px "
                       "inside the model.*retrain it"):
        architectures.build_model(arch)
