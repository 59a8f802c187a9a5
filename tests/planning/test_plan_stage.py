"""The plan stage end to end on a tiny store, and train running the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from planstores import make_store

from medpipe import PipelineError
from medpipe.params.sections import AugmentParams, PlanParams, TrainParams
from medpipe.planning import ratebook, rates, recipe
from stages.plan import plan
from stages.train import train


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """60 images of 16 px, 2 : 1 normal to opacity."""
    return make_store(tmp_path_factory.mktemp("store"), [40, 20])


def run_plan(store: Path, out: Path, budget: float | None, steps: int = 2,
             book: str | None = None) -> dict:
    plan(PlanParams(budget_minutes=budget, timed_steps=steps, rate_book=book), "cpu", store,
         None, out / "plan.yaml", out / "plan.json")
    return yaml.safe_load((out / "plan.yaml").read_text())


def test_no_budget_writes_an_empty_plan(tiny_store, tmp_path) -> None:
    assert run_plan(tiny_store, tmp_path, None) == {}
    assert json.loads((tmp_path / "plan.json").read_text())["planned"] is False


def test_two_plans_of_one_store_agree_and_train_runs_it(tiny_store, tmp_path) -> None:
    # A budget every candidate fits: the costliest is chosen, epochs capped at 30.
    first = run_plan(tiny_store, tmp_path / "a", 30)
    assert first == run_plan(tiny_store, tmp_path / "b", 30)
    report = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert report["chosen"] == "resnet18 small stem at 16 px"
    assert all(c["reason"] for c in report["choices"].values())
    assert report["fingerprint"]["train_counts"] == {"normal": 24, "opacity": 12}

    first["train"].update(epochs=1, warmup_epochs=0.5)  # a test-sized run of the plan
    first["prepare"]["image_size"] = 24  # and a resize inside the model
    applied = recipe.apply(first, TrainParams(device="cpu"), AugmentParams())
    summary = train(applied.train, applied.augment, tiny_store, tmp_path / "model.pt",
                    tmp_path / "train.json", plan=applied)
    assert summary["model"] == "resnet18" and summary["plan_input_size"] == 24
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["arch"]["input_size"] == 24 and ckpt["arch"]["image_size"] == 16


def test_a_budget_too_small_is_one_line(tiny_store, tmp_path) -> None:
    with pytest.raises(PipelineError, match="'plan.budget_minutes' 1e-05 is too small"):
        run_plan(tiny_store, tmp_path, 1e-5)


def test_a_store_too_small_is_one_line(tmp_path) -> None:
    store = make_store(tmp_path / "small", [30, 9])  # 5 opacity images in train
    with pytest.raises(PipelineError, match="class 'opacity' has 5 training images"):
        run_plan(store, tmp_path, 5)


def fake_rates(monkeypatch) -> list[str]:
    """Replace the timing of candidates by fixed rates (the real timing is
    tests/planning/test_rates.py's); returns the names of the candidates timed. Each is
    asked to be timed with the augmentation it will train with and the weight average."""
    timed: list[str] = []

    def measure(candidate, stats, train, task, device, batch, steps, augment, average) -> float:
        assert augment.affine_p == (0.0 if candidate.model == "cnn" else 0.5) and average
        timed.append(candidate.name)
        return {"cnn": 900.0}.get(candidate.model, 60.0) / (1 + candidate.input_size / 64)

    monkeypatch.setattr(rates, "measure", measure)
    return timed


def test_a_second_plan_reads_the_rate_book_and_agrees(tiny_store, tmp_path, monkeypatch) -> None:
    timed = fake_rates(monkeypatch)
    book = tmp_path / "rates.json"
    first = run_plan(tiny_store, tmp_path / "a", 0.05, book=str(book))
    report = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert {c["rate_from"] for c in report["candidates"]} == {"timed"}
    assert len(timed) == len(report["candidates"]) >= 2
    entries = json.loads(book.read_text())[report["device_key"]]
    assert len(entries) == len(report["candidates"])

    timed.clear()
    assert run_plan(tiny_store, tmp_path / "b", 0.05, book=str(book)) == first
    assert timed == []  # every rate read from the book
    again = json.loads((tmp_path / "b" / "plan.json").read_text())
    assert {c["rate_from"] for c in again["candidates"]} == {"rate book"}
    assert again["candidates"] == [{**c, "rate_from": "rate book"}
                                   for c in report["candidates"]]


def test_the_book_is_read_per_device_and_a_bad_book_is_one_line(tiny_store, tmp_path,
                                                                monkeypatch) -> None:
    timed = fake_rates(monkeypatch)
    book = tmp_path / "rates.json"
    other = {"cuda: another GPU; torch 0": {"cnn at 16 px, batch 8, store 16 px x 1 ch": 1e9}}
    book.write_text(json.dumps(other))
    run_plan(tiny_store, tmp_path / "a", 0.05, book=str(book))
    report = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert report["candidates"][0]["rate_from"] == "timed" and timed
    assert report["candidates"][0]["images_per_second"] < 1e9
    kept = json.loads(book.read_text())
    assert kept["cuda: another GPU; torch 0"] == other["cuda: another GPU; torch 0"]
    assert report["device_key"] in kept
    book.write_text("{not json")
    with pytest.raises(PipelineError, match=r"rates.json: not a rate book .*plan.rate_book"):
        run_plan(tiny_store, tmp_path / "b", 0.05, book=str(book))


def test_the_default_book_is_in_the_user_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ratebook.book_path("cache") == tmp_path / "medpipe" / "step_rates.json"
    assert ratebook.book_path(None) is None
    assert ratebook.book_path("~/rates.json") == Path.home() / "rates.json"
    assert PlanParams().rate_book == "cache"
