"""Experiments with real `dvc` and `git`: a queued sweep run by `dvc queue start -j 2`
with each run pinned to its own (pretend) GPU, then comparing (`dvc exp show --sort-by`,
`dvc exp diff`, `dvc metrics diff`, `dvc params diff`, `dvc plots diff`) and applying the
best. One sweep is run for the module; the tests read it (apply works on a copy)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import Baseline, sh

pytestmark = pytest.mark.slow

LRS = {"0.01": 0.01, "0.001": 0.001}  # the grid: train.lr=0.01,0.001
# the committed train.lr, which neither grid value equals
BASE_LR = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text(
    encoding="utf-8"))["train"]["lr"]


@dataclass(frozen=True)
class Sweep:
    path: Path
    names: dict[str, float]  # experiment name -> its train.lr
    lock_dir: Path


def wait_for_experiments(repo: Path, names: list[str], timeout: float = 400) -> None:
    """Until every queued experiment has its git ref (what a finished run leaves)."""
    deadline = time.monotonic() + timeout
    while True:
        refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                              cwd=repo, capture_output=True, text=True, check=True).stdout
        done = {ref.rsplit("/", 1)[-1] for ref in refs.split()}
        if set(names) <= done:
            return
        if time.monotonic() > deadline:
            status = sh("dvc", "queue", "status", cwd=repo, check=False)
            pytest.fail(f"queued experiments did not finish: {status.stdout}{status.stderr}")
        time.sleep(2)


@pytest.fixture(scope="module")
def sweep(baseline: Baseline, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    root = tmp_path_factory.mktemp("sweep")
    repo = root / "project"
    shutil.copytree(baseline.path, repo, symlinks=True)
    out = sh("dvc", "exp", "run", "--queue", "-S", "train.lr=" + ",".join(LRS), cwd=repo).stdout
    # "Queueing with overrides '{'params.yaml': ['train.lr=0.01']}'." then the name
    queued = re.findall(r"train\.lr=([0-9.]+)'\]\}'\.\s+Queued experiment '([^']+)'", out)
    assert sorted(lr for lr, _ in queued) == sorted(LRS), out
    lock_dir = root / "gpu-locks"  # outside the experiments' temporary workspaces
    sh("dvc", "queue", "start", "-j", "2", cwd=repo,
       env={"MEDPIPE_GPUS": "0,1", "MEDPIPE_GPU_LOCK_DIR": str(lock_dir)})
    wait_for_experiments(repo, [name for _, name in queued])
    return Sweep(repo, {name: LRS[lr] for lr, name in queued}, lock_dir)


def exp_show(repo: Path, *args: str) -> list[dict[str, str]]:
    """`dvc exp show --csv` rows, experiments only (not workspace or the baseline)."""
    out = sh("dvc", "exp", "show", "--csv", *args, cwd=repo).stdout
    return [row for row in csv.DictReader(io.StringIO(out)) if row["Experiment"]]


def test_queued_grid_ran_every_value(sweep: Sweep) -> None:
    status = sh("dvc", "queue", "status", cwd=sweep.path).stdout
    lines = {line.split()[1]: line for line in status.splitlines()[1:] if line.strip()
             and not line.startswith("Worker")}
    for name in sweep.names:
        assert lines[name].endswith("Success"), status
    rows = exp_show(sweep.path)
    assert {r["Experiment"]: float(r["train.lr"]) for r in rows} == sweep.names


def test_queued_runs_were_pinned_to_gpus(sweep: Sweep) -> None:
    """Each run's train and evaluate took a GPU of MEDPIPE_GPUS through the lock
    directory shared by the runs (which GPUs overlapping runs get is tests/utils/test_gpus.py)."""
    for name in sweep.names:
        log = sh("dvc", "queue", "logs", name, cwd=sweep.path).stdout
        for stage in ("train", "evaluate"):
            assert re.search(rf"\[{stage}\] pinned to GPU [01] \(MEDPIPE_GPUS=0,1\)", log), log
    assert {p.name for p in sweep.lock_dir.iterdir()} <= {"gpu-0.lock", "gpu-1.lock"}
    assert any(sweep.lock_dir.iterdir())


def test_sort_by_metric_then_apply_the_best(sweep: Sweep, tmp_path: Path) -> None:
    repo = tmp_path / "project"
    shutil.copytree(sweep.path, repo, symlinks=True)
    rows = exp_show(repo, "--sort-by", "metrics/evaluate.json:roc_auc", "--sort-order", "desc")
    aucs = [float(r["roc_auc"]) for r in rows]
    assert aucs == sorted(aucs, reverse=True) and len(rows) == len(sweep.names)
    best = rows[0]["Experiment"]
    sh("dvc", "exp", "apply", best, cwd=repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["lr"] == sweep.names[best]
    # The workspace now holds the experiment's outputs: nothing to reproduce, and the
    # model is the one its dvc.lock names.
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo).stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    model = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.pt")
    assert hashlib.md5((repo / "models/model.pt").read_bytes()).hexdigest() == model["md5"]
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert evaluate["roc_auc"] == pytest.approx(aucs[0], abs=1e-5)


def test_exp_diff_metrics_diff_params_diff(sweep: Sweep) -> None:
    a, b = sorted(sweep.names, key=sweep.names.get)  # lower lr first
    diff = json.loads(sh("dvc", "exp", "diff", a, b, "--json", cwd=sweep.path).stdout)
    lr = diff["params"]["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (sweep.names[a], sweep.names[b])
    assert "metrics/evaluate.json" in diff["metrics"]
    metrics = json.loads(sh("dvc", "metrics", "diff", "main", a, "--json",
                            cwd=sweep.path).stdout)
    assert metrics["metrics/train.json"]  # a different lr trains a different model
    params = json.loads(sh("dvc", "params", "diff", "main", b, "--json",
                           cwd=sweep.path).stdout)
    lr = params["params.yaml"]["train.lr"]
    assert BASE_LR not in LRS.values()
    assert (lr["old"], lr["new"]) == (BASE_LR, sweep.names[b])


def test_plots_diff_between_experiments_and_main(sweep: Sweep, tmp_path: Path) -> None:
    a, b = sorted(sweep.names)
    data = json.loads(sh("dvc", "plots", "diff", "main", a, b, "--json",
                         cwd=sweep.path).stdout)["data"]
    for title in ("Loss", "ROC per class (test)"):
        (plot,) = data[title]
        assert plot["revisions"] == ["main", a, b]
        # every revision brings its own points (the curves come from each run's outputs)
        assert {v["rev"] for v in plot["content"]["data"]["values"]} == {"main", a, b}
    out = tmp_path / "plots"
    sh("dvc", "plots", "diff", a, b, "-o", str(out), cwd=sweep.path)
    assert (out / "index.html").stat().st_size > 0
