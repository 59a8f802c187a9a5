"""Benchmark: the README's MedMNIST recipes, through the pipeline, over several seeds.

Each recipe is the exact ``dvc exp run -S ...`` command line the README gives. This
script copies the project into a scratch git repository and runs it there once per
``train.seed``, then prints the test figures (accuracy at 0.5, as MedMNIST reports it;
accuracy at the threshold chosen on validation; ROC AUC) and the wall-clock minutes of
each run (download + prepare + train + evaluate), with the mean and standard deviation,
and the training loop's images/s (so that a slow run on a shared machine shows as such).
``--data DIR`` serves the ``.npz`` files from a local folder (``data.url`` set to a
``file://`` URL; the official MD5 is still checked) instead of downloading them.

    uv run python bench/quality.py --data ../shared/data/medmnist              # both, 3 seeds
    uv run python bench/quality.py --data ../shared/data/medmnist --sets breastmnist --seeds 0
    uv run python bench/quality.py --data ../shared/data/medmnist --set train.epochs=10  # variant
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_time import copy_project  # noqa: E402

# The README quotes these lines verbatim (tests/test_readme.py checks it).
RECIPES = {
    "pneumoniamnist": (
        "dvc exp run -S data.source=medmnist -S data.name=pneumoniamnist -S data.resolution=28 "
        "-S prepare.image_size=48 -S train.model=resnet18 -S train.channels_last=true "
        "-S train.optimizer=adamw -S train.lr=0.003 -S train.weight_decay=0.05 "
        "-S train.schedule=onecycle -S train.warmup_epochs=3 -S train.balance=loss "
        "-S train.ema=0.99 -S train.epochs=12 -S augment.affine_p=0.5"
    ),
    "breastmnist": (
        "dvc exp run -S data.source=medmnist -S data.name=breastmnist -S data.resolution=28 "
        "-S prepare.image_size=28 -S train.model=resnet18 -S train.small_input=true "
        "-S train.channels_last=false -S train.optimizer=adamw -S train.lr=0.003 "
        "-S train.weight_decay=0.05 -S train.schedule=onecycle -S train.warmup_epochs=6 "
        "-S train.balance=loss -S train.ema=0.95 -S train.epochs=30 -S augment.affine_p=0.5"
    ),
}
TARGETS = {"pneumoniamnist": (0.94, 0.985), "breastmnist": (0.90, 0.93)}  # (ACC, AUC)


def run_recipe(repo: Path, name: str, seed: int, data: Path | None, env: dict,
               extra: list[str] = ()) -> dict:
    cmd = shlex.split(RECIPES[name]) + [a for kv in extra for a in ("-S", kv)]
    cmd += ["-S", f"train.seed={seed}"]
    if data is not None:
        cmd += ["-S", f"data.url={(data / f'{name}.npz').resolve().as_uri()}"]
    # `dvc exp run` leaves its -S changes in params.yaml: start each run from the committed
    # params, as the README's lines assume, not from the previous recipe's.
    subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=repo, env=env, check=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    minutes = (time.perf_counter() - start) / 60
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    report = json.loads((repo / "metrics/evaluate.json").read_text())
    train = json.loads((repo / "metrics/train.json").read_text())
    return {"seed": seed, "minutes": minutes, "acc": report["accuracy"],
            "acc_thr": report["at_threshold"]["accuracy"], "auc": report["roc_auc"],
            "best_epoch": train["best_epoch"], "img_s": train["train_images_per_second"]}


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
            acc_t, auc_t = TARGETS[name]
            summary = "  ".join(
                f"{k} {statistics.mean(r[k] for r in rows):.4f}"
                f" ± {statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0:.4f}"
                for k in ("acc", "acc_thr", "auc"))
            print(f"{name:15s} mean ± sd over {len(rows)} seeds: {summary}  "
                  f"(target ACC >= {acc_t}, AUC >= {auc_t}); "
                  f"max {max(r['minutes'] for r in rows):.1f} min per run")


if __name__ == "__main__":
    main()
