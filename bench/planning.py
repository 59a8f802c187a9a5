"""Benchmark: the plan against plain baselines on a dataset, each scored on its test split.

Each seed runs what the pipeline does with ``plan.budget_minutes`` set, without DVC: the
plan reads the raw data (asked for MedMNIST and phantoms at their side, image folders
at ``--side``), times the candidates, runs its trials on the validation split and
writes the winner; the store is prepared at the planned side, train runs the plan
(every train and augment key at its default, so the plan fills them all), and the
model is scored on the test split (the same images in every arm: the split does not
depend on the side): accuracy (argmax, as MedMNIST
reports it) and ROC AUC (one-vs-rest, macro, for more than two classes). The same
seed then trains the baselines:

- ``cnn``: params.yaml's defaults (the small CNN, 30 epochs);
- ``resnet18``: ResNet-18 at the store's side as the MedMNIST v2 paper trains it (Adam at
  0.001, no augmentation, the small stem up to 32 px; cosine), for the epochs that fit
  the same budget at its timed rate (at most 30);
- ``recipe``: the hand recipe ``recipes/<set>.yaml``, where one exists.

Per arm the mean ± sd over the seeds is printed, with the minutes taken, and the plan's
planning share of its budget.

    uv run python bench/planning.py --data DIR --sets breastmnist --budget 3 --seeds 0
    uv run python bench/planning.py --real /work/shared/data/real --sets real:malaria4000
    uv run python bench/planning.py --sets phantom:64:300,300:rgb --budget 1 --seeds 0 1

``DIR`` holds the official 28 px ``pneumoniamnist.npz`` and ``breastmnist.npz``;
``--real`` a folder of ``<name>.tar.gz`` image-folder archives (``real:<name>``), read
by the folder source (a ``train``/``test`` layout keeps its test split). Phantom stores,
``phantom:SIDE:N1,N2[,N3][:rgb]``: the synthetic generator's images at SIDE px, N1
normal, N2 opacity (and N3 effusion), grey or tinted colour, written as a folder.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medpipe.data import store as stores
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
from medpipe.planning import fingerprint, rates, recipe, rules
from medpipe.utils.devices import resolve_device
from stages.download import download
from stages.plan import plan
from stages.prepare import prepare
from stages.train import train

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def make_store(root: Path, name: str, args) -> Path:
    if name.startswith("phantom:"):
        return phantom_store(root, name)
    if name.startswith("real:"):
        folder = root / "images"
        with tarfile.open(args.real / f"{name[5:]}.tar.gz") as tar:
            tar.extractall(folder, filter="data")
        (top,) = folder.iterdir()
        data, size = DataParams(source="folder", path=str(top), classes=None), args.side
    elif name == "synthetic":
        data = DataParams(resolution=args.size, n_per_class=args.n_per_class,
                          classes=args.classes)
        size = args.size
    else:
        data = DataParams(source="medmnist", name=name, resolution=28, classes=None,
                          url=(args.data / f"{name}.npz").resolve().as_uri())
        size = 28
    download(data, root / "raw")
    prepare(PrepareParams(image_size=size), root / "raw", root / "prepared",
            root / "prepare.json")
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
    fills them all) and score the test split: accuracy (argmax) and ROC AUC."""
    applied = recipe.apply(sections, TrainParams(seed=seed, device=args.device),
                           AugmentParams())
    summary = train(applied.train, applied.augment, store, root / "model.pt",
                    root / "train.json", plan=applied)
    model, ckpt = load_checkpoint(root / "model.pt")
    task = task_of(ckpt)
    labels, probs, _ = score_split(model, store, "test", 256, resolve_device(args.device),
                                   task)
    return {"epochs": applied.train.epochs, "epochs_run": summary["epochs"],
            "train_images_per_second": summary["train_images_per_second"],
            "train_min": summary["train_seconds"] / 60,
            "acc": float((probs.argmax(1) == labels).mean()),
            "auc": float(roc_auc(labels, probs, positive=task.positive_index))}


def planned(root: Path, store: Path, seed: int, args) -> dict:
    """Plan within the budget, train the plan, score it."""
    start = time.perf_counter()
    base = PrepareParams(image_size=stores.read_stats(store)["image_size"])
    report = plan(PlanParams(budget_minutes=args.budget, timed_steps=args.steps), base,
                  args.device, root / "raw", root / "plan.yaml", root / "plan.json")
    plan_min = (time.perf_counter() - start) / 60
    if args.keep is not None:  # the whole report: every trial, every reason
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "plan_detail.json", args.keep / f"plan-{seed}.json")
    sections = recipe.read(root / "plan.yaml")
    cfg, record = recipe.apply_prepare(sections, base)
    if cfg.image_size != base.image_size:  # the store at the planned side, as prepare makes it
        shutil.rmtree(root / "planned", ignore_errors=True)
        prepare(cfg, root / "raw", root / "planned", root / "planned.json", plan=record)
        store = root / "planned"
    scored = train_and_score(root, store, sections, seed, args)
    winner = report["trials"][report["winner"]]
    return {"chosen": report["chosen"], "winner": {k: winner[k] for k in (
                "origin", "optimizer", "lr", "weight_decay", "balance", "affine_p",
                "label_smoothing", "average", "schedule")},
            "trials": len(report["trials"]), "rung_epochs": report["search"]["rung_epochs"],
            "precision": report["choices"]["train.precision"]["reason"],
            "rates": {c["name"]: c["images_per_second"] for c in report["candidates"]},
            "plan_min": round(plan_min, 2),
            "of_budget": round((plan_min + scored["train_min"]) / args.budget, 3), **scored}


def paper_resnet(root: Path, store: Path, seed: int, args) -> dict:
    """ResNet-18 as the MedMNIST v2 paper trains it, for the epochs the budget holds at
    its timed rate."""
    fp = fingerprint.read(store)
    config = rules.paper_config(fp)
    device = resolve_device(args.device)
    from medpipe.planning.trials import trial_params

    batch = rules.batch_size(fp, device.type)
    cfg, aug = trial_params(config, 1, batch, device.type, fp)
    stats = stores.read_stats(store)
    train_split, val = (stores.load_split(store, s) for s in ("train", "val"))
    rate = rates.measure(config.candidate, cfg, aug, stats, train_split, val, store, device,
                         args.steps)
    epochs = max(1, rules.epochs_in(fp, rate, args.budget * 60 * rules.USABLE))
    sections = {"train": {"model": "resnet18", "small_input": config.candidate.small_input,
                          "optimizer": "adam", "lr": 0.001, "schedule": "cosine",
                          "warmup_epochs": 0, "epochs": epochs, "batch_size": batch}}
    return train_and_score(root, store, sections, seed, args)


def arms(name: str) -> list[str]:
    out = ["plan", "cnn", "resnet18"]
    if (RECIPES / f"{name}.yaml").exists():
        out.append("recipe")
    return out


def run_arm(arm: str, name: str, root: Path, store: Path, seed: int, args) -> dict:
    if arm == "plan":
        return planned(root, store, seed, args)
    if arm == "cnn":
        return train_and_score(root, store, {}, seed, args)
    if arm == "resnet18":
        return paper_resnet(root, store, seed, args)
    doc = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    sections = {k: doc.get(k, {}) for k in ("train", "augment")}
    return train_and_score(root, store, sections, seed, args)


def summary(name: str, arm: str, rows: list[dict]) -> None:
    parts = []
    for key in ("acc", "auc"):
        values = [r[key] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        parts.append(f"{key} {np.mean(values):.4f} ± {sd:.4f}")
    minutes = np.mean([r["train_min"] + r.get("plan_min", 0) for r in rows])
    print(f"{name} {arm}: {', '.join(parts)} over {len(rows)} seeds; {minutes:.1f} min",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    p.add_argument("--data", type=Path, help="folder holding <name>.npz (28 px)")
    p.add_argument("--real", type=Path, help="folder holding <name>.tar.gz image folders")
    p.add_argument("--side", type=int, default=64, help="real: prepare.image_size")
    p.add_argument("--budget", type=float, default=10.0, help="plan.budget_minutes")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=10, help="plan.timed_steps")
    p.add_argument("--arms", nargs="+", help="only these: plan cnn resnet18 recipe")
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", type=Path,
                   help="copy each plan's report (metrics/plan_detail.json) here")
    p.add_argument("--size", type=int, default=64, help="synthetic: side, px")
    p.add_argument("--n-per-class", type=int, default=500, help="synthetic")
    p.add_argument("--classes", nargs="+", default=["normal", "opacity"], help="synthetic")
    args = p.parse_args()
    print(f"budget {args.budget} min, device {args.device}, threads {torch.get_num_threads()}")
    for name in args.sets:
        with tempfile.TemporaryDirectory(prefix="medpipe-plan-") as tmp:
            store = make_store(Path(tmp), name, args)
            for arm in [a for a in arms(name) if not args.arms or a in args.arms]:
                rows = []
                for seed in args.seeds:
                    row = {"arm": arm, "seed": seed, **run_arm(arm, name, Path(tmp), store,
                                                               seed, args)}
                    print(name, json.dumps(row), flush=True)
                    rows.append(row)
                if all(math.isfinite(r["auc"]) for r in rows):
                    summary(name, arm, rows)


if __name__ == "__main__":
    main()
