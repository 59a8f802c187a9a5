"""Benchmark: the MedMNIST recipes, through the pipeline, over several seeds.

Each run is what a user types: ``medpipe recipe <name>`` (``recipes/<name>.yaml``), then
``dvc exp run -S train.seed=<seed>``. This script copies the project into a scratch git
repository and runs it there once per seed, then prints the test figures (accuracy at
0.5, as MedMNIST reports it; accuracy at the threshold chosen on validation; ROC AUC),
the wall-clock minutes of each run (download + prepare + train + evaluate) with the mean
and standard deviation, and the training loop's images/s (so that a slow run on a shared
machine shows as such).
``--data DIR`` serves the ``.npz`` files from a local folder (``data.url`` set to a
``file://`` URL; the official MD5 is still checked) instead of downloading them.

    uv run python bench/quality.py --data DIR          # both recipes, seeds 0, 1, 2
    uv run python bench/quality.py --data DIR --sets breastmnist --seeds 0
    uv run python bench/quality.py --data DIR --set train.epochs=10  # a variant
    uv run python bench/quality.py --data DIR --set prepare.folds=5  # + 5-fold ensemble

``DIR`` holds the official 28 px files ``pneumoniamnist.npz`` and ``breastmnist.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.repro_time import copy_project

RECIPES = ("pneumoniamnist", "breastmnist")  # recipes/<name>.yaml


def run_recipe(repo: Path, name: str, seed: int, data: Path | None, env: dict,
               extra: list[str] = ()) -> dict:
    subprocess.run([sys.executable, "-m", "medpipe", "recipe", name], cwd=repo, env=env,
                   check=True, capture_output=True)
    cmd = ["dvc", "exp", "run", *[a for kv in extra for a in ("-S", kv)]]
    cmd += ["-S", f"train.seed={seed}"]
    if data is not None:
        cmd += ["-S", f"data.url={(data / f'{name}.npz').resolve().as_uri()}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    minutes = (time.perf_counter() - start) / 60
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    report = json.loads((repo / "metrics/evaluate_detail.json").read_text())
    train = json.loads((repo / "metrics/train_detail.json").read_text())
    row = {"seed": seed, "minutes": minutes, "acc": report["accuracy"],
           "acc_thr": report["at_threshold"]["accuracy"], "auc": report["roc_auc"],
           "best_epoch": train["best_epoch"], "img_s": train["train_images_per_second"],
           "train_minutes": train["train_seconds"] / 60}
    if "folds" in report:  # with -S prepare.folds=K: the folds and their ensemble
        crossval = json.loads((repo / "metrics/crossval_detail.json").read_text())
        row["folds"] = report["folds"]
        row["ensemble"] = report["ensemble"]
        row["fold_minutes"] = [f["train_seconds"] / 60 for f in crossval["per_fold"]]
    return row


def print_folds(name: str, r: dict) -> None:
    """Each fold's test figures, their mean ± sd, and the ensemble's, with the training
    minutes of the single model and of the folds."""
    for f in r["folds"]["per_fold"]:
        t = f["test"]
        print(f"{name:15s}   fold {f['fold']}  test AUC {t['roc_auc']:.4f}  ACC@thr "
              f"{t['accuracy']:.4f}  val AUC {f['val']['roc_auc']:.4f}  "
              f"{r['fold_minutes'][f['fold']]:.1f} min")
    m, sd = r["folds"]["mean"]["test"], r["folds"]["sd"]["test"]
    e = r["ensemble"]
    ci = e["ci95"]["roc_auc"]
    print(f"{name:15s}   folds mean ± sd: AUC {m['roc_auc']:.4f} ± {sd['roc_auc']:.4f}  "
          f"ACC@thr {m['accuracy']:.4f} ± {sd['accuracy']:.4f}")
    print(f"{name:15s}   ensemble of {e['members']}: ACC {e['accuracy']:.4f}  ACC@thr "
          f"{e['at_threshold']['accuracy']:.4f}  AUC {e['roc_auc']:.4f} "
          f"({ci['low']:.4f}-{ci['high']:.4f}); training minutes: single model "
          f"{r['train_minutes']:.1f}, folds {sum(r['fold_minutes']):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", type=Path, help="folder holding <name>.npz (28 px)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a variant: one more -S after the recipe's own (repeatable)")
    args = parser.parse_args()
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for key, value in (("NAME", "bench"), ("EMAIL", "bench@example.invalid")):
        env.setdefault(f"GIT_AUTHOR_{key}", value)
        env.setdefault(f"GIT_COMMITTER_{key}", value)
    with tempfile.TemporaryDirectory(prefix="medpipe-quality-") as scratch:
        repo = Path(scratch) / "project"
        copy_project(repo)
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-q", "-m", "bench"]):
            subprocess.run(cmd, cwd=repo, env=env, check=True)
        if args.extra:
            print("variant: the recipes with", " ".join(f"-S {kv}" for kv in args.extra))
        print(f"cores {os.cpu_count()}; ACC at 0.5 (MedMNIST's definition), ACC at the "
              "threshold chosen on val, ROC AUC; minutes per whole `dvc exp run`")
        for name in args.sets:
            rows = []
            for seed in args.seeds:
                rows.append(run_recipe(repo, name, seed, args.data, env, args.extra))
                r = rows[-1]
                print(f"{name:15s} seed {seed}  ACC {r['acc']:.4f}  ACC@thr {r['acc_thr']:.4f}  "
                      f"AUC {r['auc']:.4f}  best epoch {r['best_epoch']:2d}  "
                      f"{r['minutes']:.1f} min  train {r['img_s']:.0f} img/s", flush=True)
                if "folds" in r:
                    print_folds(name, r)
            summary = "  ".join(
                f"{k} {statistics.mean(r[k] for r in rows):.4f}"
                f" ± {statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0:.4f}"
                for k in ("acc", "acc_thr", "auc"))
            print(f"{name:15s} mean ± sd over {len(rows)} seeds: {summary}; "
                  f"max {max(r['minutes'] for r in rows):.1f} min per run")


if __name__ == "__main__":
    main()
