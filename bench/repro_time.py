"""Benchmark: the default `dvc repro` from nothing, stage by stage, in a scratch copy.

Copies the project (code, dvc.yaml, params.yaml as committed) into a temporary git
repository, runs each stage with `dvc repro -s <stage>` in pipeline order, and prints
a table of wall-clock seconds per stage, the total, and the test metrics reached.

    uv run python bench/repro_time.py            # default params
    uv run python bench/repro_time.py --keep     # leave the scratch repo for inspection
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["download", "prepare", "pretrained", "train", "evaluate"]


def copy_project(dest: Path) -> None:
    for name in ["stages", "medpipe", "recipes"]:
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config",
                 "data/external/README.md"]:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch repository")
    args = parser.parse_args()
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("GIT_AUTHOR_NAME", "bench")
    env.setdefault("GIT_AUTHOR_EMAIL", "bench@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "bench")
    env.setdefault("GIT_COMMITTER_EMAIL", "bench@example.invalid")
    scratch = Path(tempfile.mkdtemp(prefix="medpipe-bench-"))
    repo = scratch / "project"
    copy_project(repo)

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "bench")
    times = {}
    for stage in STAGES:
        start = time.perf_counter()
        run("dvc", "repro", "-s", stage)
        times[stage] = time.perf_counter() - start
    report = json.loads((repo / "metrics/evaluate_detail.json").read_text())
    train = json.loads((repo / "metrics/train_detail.json").read_text())

    print(f"{'stage':<10} {'seconds':>8}")
    for stage, seconds in times.items():
        print(f"{stage:<10} {seconds:8.1f}")
    print(f"{'total':<10} {sum(times.values()):8.1f}   (target: <= 180 s on 2 cores)")
    print(f"cores {os.cpu_count()}, model {train['model']}, {train['epochs']} epochs, "
          f"train loop {train['train_seconds']} s at {train['train_images_per_second']} img/s")
    print(f"test accuracy {report['accuracy']:.4f}  balanced accuracy "
          f"{report['balanced_accuracy']:.4f}  ROC AUC {report['roc_auc']:.4f}  "
          f"(target: accuracy >= 0.90)")
    if args.keep:
        print(f"scratch repository kept at {repo}")
    else:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
