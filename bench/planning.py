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

With ``--compare``, the plan's choice of model is put against the alternatives: every
candidate the plan timed is trained with the plan's rules applied to it (the epochs its
rate fits in the same budget, its batch, schedule, weight average, balance and
augmentation) and scored, and the mean AUC per candidate over the seeds is printed with
the plan's choice beside the best. Besides the MedMNIST sets, ``--sets`` then takes
synthetic stores written as image folders, ``phantom:SIDE:N1,N2[,N3][:rgb]``: the
generator's images at SIDE px, N1 normal, N2 opacity (and N3 effusion) images, grey or
tinted colour::

    uv run python bench/planning.py --compare --budget 1 --seeds 0 1 \
        --sets phantom:64:300,300 phantom:64:300,90 phantom:64:200,200,200 phantom:64:300,300:rgb
"""

from __future__ import annotations

import argparse
import dataclasses
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
from medpipe.planning import planner, recipe, rules
from medpipe.utils.devices import resolve_device
from stages.download import download
from stages.plan import plan
from stages.prepare import prepare
from stages.train import train


def make_store(root: Path, name: str, args) -> Path:
    if name.startswith("phantom:"):
        return phantom_store(root, name)
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


def phantom_store(root: Path, spec: str) -> Path:
    """A store from ``phantom:SIDE:N1,N2[,N3][:rgb]``: the synthetic generator's images
    with the given count per class, written as a folder dataset (PNG per image) and
    prepared at SIDE px. ``rgb``: each image tinted by its own random colour."""
    from PIL import Image

    from medpipe.data import phantoms

    parts = spec.split(":")
    side, counts = int(parts[1]), [int(n) for n in parts[2].split(",")]
    rgb = parts[3:] == ["rgb"]
    classes = phantoms.CLASSES[:len(counts)]
    images, labels = phantoms.generate(max(counts), classes, side, seed=0)
    tints = np.random.default_rng(0).uniform(0.6, 1.0, (len(images), 3))
    folder = root / "images"
    for k, (name, n) in enumerate(zip(classes, counts, strict=True)):
        (folder / name).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(labels == k)[:n]):
            pixels = images[i]
            if rgb:
                pixels = (pixels[..., None] * tints[i]).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{j:04d}.png")
    download(DataParams(source="folder", path=str(folder), classes=None), root / "raw")
    prepare(PrepareParams(image_size=side), root / "raw", root / "prepared",
            root / "prepare.json")
    return root / "prepared"


def train_and_score(root: Path, store: Path, sections: dict, seed: int, args) -> dict:
    """Train the recipe ``sections`` (every train and augment key at its default, so it
    fills them all) and score the test split: ACC at 0.5 and ROC AUC."""
    applied = recipe.apply(sections, TrainParams(seed=seed, device=args.device),
                           AugmentParams())
    summary = train(applied.train, applied.augment, store, root / "model.pt",
                    root / "train.json", plan=applied)
    model, ckpt = load_checkpoint(root / "model.pt")
    labels, probs, _ = score_split(model, store, "test", 256, resolve_device(args.device),
                                   task_of(ckpt))
    return {"epochs": applied.train.epochs, "train_min": summary["train_seconds"] / 60,
            "acc": float((probs.argmax(1) == labels).mean()),
            "auc": float(roc_auc(labels, probs))}


def compare(root: Path, store: Path, seed: int, args) -> list[dict]:
    """Plan, then train every candidate the plan timed as the rules would have set it
    up had they chosen it; a row per candidate."""
    timed = planner.time_and_choose(store, root / "raw", args.budget,
                                    resolve_device(args.device), args.steps,
                                    root / "rates-compare.json")
    rows = []
    for trial in timed.plan.trials:
        if trial.epochs < 1:
            continue
        as_chosen = dataclasses.replace(timed.plan, chosen=trial)
        choices = rules.decide(timed.fingerprint, as_chosen, "compared")
        rows.append({"seed": seed, "candidate": trial.candidate.name,
                     "rate": trial.images_per_second,
                     "planned": trial == timed.plan.chosen,
                     **train_and_score(root, store, planner.sections_of(choices), seed,
                                       args)})
    return rows


def compare_summary(name: str, rows: list[dict]) -> None:
    """Per candidate: mean ± sd of AUC and ACC over the seeds; the plan's choice against
    the candidate with the best mean AUC."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["candidate"], []).append(r)
    means = {}
    for cand, rs in by.items():
        auc = [r["auc"] for r in rs]
        acc = [r["acc"] for r in rs]
        sd = statistics.stdev(auc) if len(auc) > 1 else 0.0
        means[cand] = float(np.mean(auc))
        print(f"{name} {cand}: epochs {[r['epochs'] for r in rs]}, AUC {np.mean(auc):.4f} ± "
              f"{sd:.4f}, ACC {np.mean(acc):.4f}, planned in {sum(r['planned'] for r in rs)}"
              f" of {len(rs)} seeds")
    best = max(means, key=means.get)
    chosen = {r["candidate"] for r in rows if r["planned"]}
    print(f"{name} best {best} (AUC {means[best]:.4f}); planned "
          + ", ".join(f"{c} (AUC {means[c]:.4f}, {means[c] - means[best]:+.4f})"
                      for c in sorted(chosen)))


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
    scored = train_and_score(root, store, recipes["plan"], seed, args)
    return {"seed": seed, "chosen": report["chosen"], "epochs": scored["epochs"],
            "rates": [c["images_per_second"] for c in report["candidates"]],
            "plan_s": report["plan_seconds"], "retimed_s": retimed["plan_seconds"],
            "retimed_rates": [c["images_per_second"] for c in retimed["candidates"]],
            "same_when_retimed": recipes["retimed"] == recipes["plan"],
            "booked_s": booked["plan_seconds"],
            "same_from_book": recipes["booked"] == recipes["plan"],
            "train_min": scored["train_min"],
            "of_budget": round(scored["train_min"] / args.budget, 3),
            "acc": scored["acc"], "auc": scored["auc"]}


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
    p.add_argument("--compare", action="store_true",
                   help="train every candidate the plan timed, not only its choice")
    args = p.parse_args()
    print(f"budget {args.budget} min, device {args.device}, threads {torch.get_num_threads()}")
    for name in args.sets:
        rows = []
        with tempfile.TemporaryDirectory(prefix="medpipe-plan-") as tmp:
            store = make_store(Path(tmp), name, args)
            for seed in args.seeds:
                new = (compare(Path(tmp), store, seed, args) if args.compare
                       else [run(Path(tmp), store, seed, args)])
                for row in new:
                    print(name, json.dumps(row), flush=True)
                rows += new
        if args.compare:
            compare_summary(name, rows)
            continue
        for key in ("acc", "auc"):
            values = [r[key] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{name} {key} {np.mean(values):.4f} ± {sd:.4f} over {len(values)} seeds")


if __name__ == "__main__":
    main()
