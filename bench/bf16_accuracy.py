"""Benchmark: does bf16 autocast cost test accuracy? A planned configuration trained in
fp32 and with bf16 autocast, the same seeds, each scored on the test split.

The configuration is a plan's (``--plan``: a ``metrics/plan_detail.json`` as
``bench/planning.py --keep`` copies it), with every planned key but ``train.precision``;
the store is prepared at the planned side. For each seed the two precisions train back
to back; the table gives accuracy (argmax) and ROC AUC per seed, the mean ± sd of each
precision, and the mean paired difference (bf16 minus fp32) with its sd.

    uv run python bench/bf16_accuracy.py --data DIR --set breastmnist --plan plans/plan-0.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from bench import planning  # its stores, and the training and scoring of its arms
from medpipe.data import store as stores
from medpipe.params.sections import PrepareParams
from medpipe.planning import recipe
from medpipe.planning.planner import sections_of
from stages.prepare import prepare

PRECISIONS = ("auto", "bf16")  # auto: fp32 on a CPU


def planned_sections(report: dict, precision: str) -> dict:
    """The plan's sections (every planned key, with its value), ``train.precision`` set."""
    choices = {key: (c["value"], c["reason"]) for key, c in report["choices"].items()}
    sections = sections_of(choices)
    sections["train"]["precision"] = precision
    return sections


def store_at(root: Path, store: Path, sections: dict) -> Path:
    """The store at the planned side, as the prepare stage makes it from the raw data."""
    side = sections.get("prepare", {}).get("image_size")
    base = PrepareParams(image_size=stores.read_stats(store)["image_size"])
    cfg, record = recipe.apply_prepare(sections, base)
    if side is None or cfg.image_size == base.image_size:
        return store
    shutil.rmtree(root / "planned", ignore_errors=True)
    prepare(cfg, root / "raw", root / "planned", root / "planned.json", plan=record)
    return root / "planned"


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", required=True, help="as bench/planning.py --sets takes it")
    p.add_argument("--plan", type=Path, required=True, help="a plan_detail.json")
    p.add_argument("--data", type=Path, help="folder holding <name>.npz (28 px)")
    p.add_argument("--real", type=Path, help="folder holding <name>.tar.gz image folders")
    p.add_argument("--side", type=int, default=64, help="real: prepare.image_size")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    report = json.loads(args.plan.read_text())
    print(f"plan: {report['chosen']}, threads {torch.get_num_threads()}")
    rows: dict[str, list[dict]] = {precision: [] for precision in PRECISIONS}
    with tempfile.TemporaryDirectory(prefix="medpipe-bf16-") as tmp:
        root = Path(tmp)
        store = store_at(root, planning.make_store(root, args.set, args),
                         planned_sections(report, "auto"))
        for seed in args.seeds:
            for precision in PRECISIONS:
                row = planning.train_and_score(root, store,
                                               planned_sections(report, precision), seed,
                                               args)
                print(json.dumps({"seed": seed, "precision": precision, **row}), flush=True)
                rows[precision].append(row)
    print("| precision | " + " | ".join(f"seed {s} ACC / AUC" for s in args.seeds)
          + " | ACC mean ± sd | AUC mean ± sd | train minutes |")
    print("|---" * (len(args.seeds) + 4) + "|")
    for precision, done in rows.items():
        cells = " | ".join(f"{r['acc']:.4f} / {r['auc']:.4f}" for r in done)
        minutes = statistics.mean(r["train_min"] for r in done)
        print(f"| {'fp32' if precision == 'auto' else precision} | {cells} | "
              f"{mean_sd([r['acc'] for r in done])} | {mean_sd([r['auc'] for r in done])} | "
              f"{minutes:.2f} |")
    for figure in ("acc", "auc"):
        diffs = [b[figure] - a[figure] for a, b in zip(*rows.values(), strict=True)]
        print(f"bf16 - fp32, {figure}: {mean_sd(diffs)} (paired by seed)")


if __name__ == "__main__":
    main()
