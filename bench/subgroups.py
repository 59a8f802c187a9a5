"""Benchmark: does subgroup evaluation find a gap when there is one, and only then?

Two sites contribute the same synthetic chest radiographs (``medpipe.data.phantoms``)
through a CSV manifest with a ``site`` column. In the ``gap`` scenario site b's images
are acquired worse (darker, contrast squeezed, noisier); in ``no gap`` both sites are
alike. Each scenario runs the pipeline's own steps (the csv source, prepare, train,
evaluate with ``evaluate.groups: [site]``) and prints the per-site figures with their
95% intervals and the largest gap.

    uv run python bench/subgroups.py                 # both scenarios, 500 per class and site
    uv run python bench/subgroups.py --per-class 150 --epochs 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from medpipe.data import phantoms
from medpipe.params.loading import parse_section
from stages.download import download
from stages.evaluate import evaluate
from stages.prepare import prepare
from stages.train import train

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["normal", "opacity"]


def make_sites(root: Path, per_class: int, degrade_b: bool, seed: int = 0) -> Path:
    """PNG files of two sites and ``labels.csv`` (path, label, patient_id, site)."""
    rng = np.random.default_rng(seed)
    rows = []
    for site in ("a", "b"):
        for label in CLASSES:
            for i in range(per_class):
                img = phantoms.render(label, 64, rng).astype(np.float32)
                if site == "b" and degrade_b:  # an older detector: darker, flatter, noisier
                    img = 0.55 * img + rng.normal(0.0, 25.0, img.shape)
                path = f"{site}/{label}_{i:04d}.png"
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / path)
                rows.append({"path": path, "label": label, "site": site})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def sections(epochs: int) -> dict:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    # A large test split: each site's intervals must be narrow enough to tell a gap.
    doc["prepare"].update(image_size=32, channels=1, workers=1, val_fraction=0.15,
                          test_fraction=0.35)
    doc["train"].update(epochs=epochs, batch_size=64, device="cpu", warmup_epochs=1)
    doc["evaluate"].update(groups=["site"], min_group_cases=20, gradcam=0, device="cpu")
    return doc


def scenario(name: str, degrade_b: bool, args, work: Path) -> None:
    doc = sections(args.epochs)
    data = make_sites(work / "dataset", args.per_class, degrade_b)
    data_cfg = parse_section("data", {**doc["data"], "source": "csv", "name": "labels.csv",
                                      "path": str(data), "classes": None}, stage="download")
    start = time.perf_counter()
    download(data_cfg, work / "raw")
    prepare(parse_section("prepare", doc["prepare"], stage="prepare"), work / "raw",
            work / "prepared", work / "prepare.json")
    train(parse_section("train", doc["train"], stage="train"),
          parse_section("augment", doc["augment"], stage="train"), work / "prepared",
          work / "model.pt", work / "train.json")
    summary = evaluate(parse_section("evaluate", doc["evaluate"], stage="evaluate"),
                       work / "model.pt", work / "prepared", work / "evaluate.json",
                       work / "plots", work / "report.md")
    minutes = (time.perf_counter() - start) / 60
    site = summary["groups"]["site"]
    print(f"\n{name}: test AUC {summary['roc_auc']:.3f} over {summary['n']} images "
          f"({minutes:.1f} min)")
    print(f"{'site':>5} {'cases':>5} {'AUC (95% CI)':>22} {'sensitivity (95% CI)':>24} "
          f"{'specificity (95% CI)':>24}")
    for value, fig in site["values"].items():
        ci = fig["ci95"]
        cells = [f"{fig[m]:.3f} ({ci[m]['low']:.3f}-{ci[m]['high']:.3f})"
                 for m in ("roc_auc", "sensitivity", "specificity")]
        print(f"{value:>5} {fig['n']:>5} {cells[0]:>22} {cells[1]:>24} {cells[2]:>24}")
    for metric, gap in site["gaps"].items():
        ci = gap["ci95"]
        print(f"  largest {metric} gap {gap['gap']:.3f} ({gap['lowest']} below {gap['highest']}),"
              f" 98.3% CI {ci['low']:.3f} to {ci['high']:.3f}: "
              f"{'found' if gap['separated'] else 'not distinguishable from noise'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=500, help="images per class and site")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    print(f"{args.per_class} images per class and site (35% test), 32 px, small CNN, "
          f"{args.epochs} epochs; evaluate.groups: [site], 1000 bootstrap resamples")
    for name, degrade in (("gap (site b degraded)", True), ("no gap (sites alike)", False)):
        with tempfile.TemporaryDirectory(prefix="medpipe-subgroups-") as tmp:
            scenario(name, degrade, args, Path(tmp))


if __name__ == "__main__":
    main()
