"""Benchmark: the planned configuration on a dataset, trained and scored on its test split.

Each run does what the pipeline does with ``plan.budget_minutes`` set, without DVC: the
store is prepared at the native side (MedMNIST 28 px; synthetic ``--size``), the plan
times its candidates on the device and chooses, train runs the plan (every train and
augment key at its default, so the plan fills them all), and the model is scored on the
test split: accuracy at 0.5 (as MedMNIST reports it) and ROC AUC. The plan's own
seconds are printed, and whether a second plan that times the candidates again, and a
third that reads their rates from the first plan's rate book, choose the same.

    uv run python bench/planning.py --data DIR --sets breastmnist --budget 3 --seeds 0
    uv run python bench/planning.py --data DIR --budget 10 --seeds 0 1 2   # the full table
    uv run python bench/planning.py --sets synthetic --size 64 --classes normal opacity effusion

``DIR`` holds the official 28 px ``pneumoniamnist.npz`` and ``breastmnist.npz``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from medpipe.evaluation.metrics import roc_auc
from medpipe.inference.predictor import score_split
from medpipe.models.checkpoint import load_checkpoint, task_of
from medpipe.params.sections import (
    AugmentParams,
    DataParams,
    PlanParams,
    PrepareParams,
    TrainParams,
)
from medpipe.planning import recipe
from medpipe.utils.devices import resolve_device
from stages.download import download
from stages.plan import plan
from stages.prepare import prepare
from stages.train import train


def make_store(root: Path, name: str, args) -> Path:
    if name == "synthetic":
        data = DataParams(resolution=args.size, n_per_class=args.n_per_class,
                          classes=args.classes)
        size = args.size
    else:
        data = DataParams(source="medmnist", name=name, resolution=28, classes=None,
                          url=(args.data / f"{name}.npz").resolve().as_uri())
        size = 28
    download(data, root / "raw")
    prepare(PrepareParams(image_size=size, channels=args.channels), root / "raw",
            root / "prepared", root / "prepare.json")
    return root / "prepared"


def run(root: Path, store: Path, seed: int, args) -> dict:
    """Plan three times: timing every candidate into a new rate book, timing them all
    again without a book, and reading the book; then train the first plan and score it."""
    def plan_into(name: str, book: Path | None) -> dict:
        cfg = PlanParams(budget_minutes=args.budget, timed_steps=args.steps,
                         rate_book=str(book) if book else None)
        return plan(cfg, args.device, store, root / "raw", root / f"{name}.yaml",
                    root / f"{name}.json")

    book = root / f"rates-{seed}.json"
    report = plan_into("plan", book)
    retimed = plan_into("retimed", None)
    booked = plan_into("booked", book)
    recipes = {n: recipe.read(root / f"{n}.yaml") for n in ("plan", "retimed", "booked")}
    applied = recipe.apply(recipes["plan"],
                           TrainParams(seed=seed, device=args.device), AugmentParams())
    summary = train(applied.train, applied.augment, store, root / "model.pt",
                    root / "train.json", plan=applied)
    model, ckpt = load_checkpoint(root / "model.pt")
    labels, probs, _ = score_split(model, store, "test", 256, resolve_device(args.device),
                                   task_of(ckpt))
    acc = float((probs.argmax(1) == labels).mean())
    return {"seed": seed, "chosen": report["chosen"], "epochs": applied.train.epochs,
            "rates": [c["images_per_second"] for c in report["candidates"]],
            "plan_s": report["plan_seconds"], "retimed_s": retimed["plan_seconds"],
            "retimed_rates": [c["images_per_second"] for c in retimed["candidates"]],
            "same_when_retimed": recipes["retimed"] == recipes["plan"],
            "booked_s": booked["plan_seconds"],
            "same_from_book": recipes["booked"] == recipes["plan"],
            "train_min": summary["train_seconds"] / 60,
            "of_budget": round(summary["train_seconds"] / 60 / args.budget, 3),
            "acc": acc, "auc": float(roc_auc(labels, probs))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    p.add_argument("--data", type=Path, help="folder holding <name>.npz (28 px)")
    p.add_argument("--budget", type=float, default=10.0, help="plan.budget_minutes")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=10, help="plan.timed_steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=64, help="synthetic: side, px")
    p.add_argument("--n-per-class", type=int, default=500, help="synthetic")
    p.add_argument("--classes", nargs="+", default=["normal", "opacity"], help="synthetic")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3])
    args = p.parse_args()
    print(f"budget {args.budget} min, device {args.device}, threads {torch.get_num_threads()}")
    for name in args.sets:
        rows = []
        with tempfile.TemporaryDirectory(prefix="medpipe-plan-") as tmp:
            store = make_store(Path(tmp), name, args)
            for seed in args.seeds:
                rows.append(run(Path(tmp), store, seed, args))
                print(name, json.dumps(rows[-1]), flush=True)
        for key in ("acc", "auc"):
            values = [r[key] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{name} {key} {np.mean(values):.4f} ± {sd:.4f} over {len(values)} seeds")


if __name__ == "__main__":
    main()
