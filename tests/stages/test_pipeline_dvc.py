"""End to end with real `dvc` and `git`: what reruns, reproducibility, experiments,
bad params and killed stages. Each test builds a small project in a temporary repo."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, Baseline, edit_params, kill_at_epoch, sh, stages_run, tool_env

pytestmark = pytest.mark.slow

ALL = ["download", "plan", "prepare", "pretrained", "train", "crossval", "evaluate"]


def repro(repo: Path, *args: str) -> list[str]:
    return stages_run(sh("dvc", "repro", *args, cwd=repo).stdout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_repro_runs_all_stages_and_writes_outputs(baseline: Baseline) -> None:
    project = baseline.path
    assert baseline.ran == ALL
    for out in ["data/raw/dataset.json", "data/prepared/train_images.npy", "models/model.pt",
                "metrics/train.json", "metrics/evaluate.json", "metrics/evaluate/roc.json",
                "metrics/evaluate/predictions.csv", "metrics/train/plots/metrics/val/auc.tsv",
                "metrics/prepare_preview.png", "metrics/prepare_counts.json"]:
        assert (project / out).is_file(), out
    prepared = json.loads((project / "metrics/prepare_detail.json").read_text())
    assert prepared["positive_class"] == "opacity" and prepared["duplicates"]["count"] == 0
    report = json.loads((project / "metrics/evaluate_detail.json").read_text())
    for key in ["accuracy", "balanced_accuracy", "roc_auc"]:
        assert 0.0 <= report[key] <= 1.0
    assert set(report["per_class"]) == {"normal", "opacity"}
    assert {"precision", "recall"} <= set(report["per_class"]["opacity"])
    train = json.loads((project / "metrics/train_detail.json").read_text())
    assert 1 <= train["best_epoch"] <= 2 and train["device"] == "cpu"
    # What DVC tracks as metrics is numbers only, under names that hold no class name.
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project).stdout)
    files = shown[""]["data"]
    assert set(files) == {f"metrics/{s}.json" for s in ("prepare", "plan", "train", "crossval",
                                                         "evaluate")}
    for path, content in files.items():
        for key, value in content["data"].items():
            assert type(value) in (int, float), (path, key, value)
            assert "normal" not in key and "opacity" not in key, (path, key)
    assert set(files["metrics/evaluate.json"]["data"]) == {
        "roc_auc", "roc_auc_low", "roc_auc_high", "accuracy", "balanced_accuracy",
        "sensitivity", "specificity", "threshold", "ece"}
    # The declared plots render: training curves, ROC per class and confusion matrix.
    shown = sh("dvc", "plots", "show", "--json", cwd=project).stdout
    for name in ["Loss", "Accuracy", "ROC per class (test)", "Confusion matrix (test)"]:
        assert name in shown
    # Nothing left to do afterwards.
    assert "Data and pipelines are up to date" in sh("dvc", "repro", cwd=project).stdout


def test_copied_baseline_is_up_to_date(reproduced: Path) -> None:
    """The copy the other tests start from is a valid, fully reproduced project."""
    out = sh("dvc", "status", cwd=reproduced).stdout
    assert "Data and pipelines are up to date" in out


def test_bytecode_caches_do_not_change_the_code_dependencies(reproduced: Path) -> None:
    """Python writes __pycache__ into the folders that stages list as dependencies
    (medpipe/data/sources, medpipe/params) unless told not to; .dvcignore keeps them out
    of the folders' hashes, so the committed dvc.lock stays valid either way."""
    for folder in ["medpipe/data/sources", "medpipe/params"]:
        cache = reproduced / folder / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / "raw.cpython-311.pyc").write_bytes(b"bytecode")
    (reproduced / "medpipe/params/stray.pyc").write_bytes(b"bytecode")
    out = sh("dvc", "status", cwd=reproduced).stdout
    assert "Data and pipelines are up to date" in out, out


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status` finds changed in their own dependencies or params."""
    out = sh("dvc", "status", cwd=repo).stdout
    return {line[:-1] for line in out.splitlines()
            if line.endswith(":") and not line[0].isspace()}


def test_params_rerun_only_the_stages_that_read_them(reproduced: Path) -> None:
    """The README table: a key of a section changes exactly the stages that read the
    section; `dvc repro` reruns them and the stages downstream of their outputs."""
    project = reproduced
    original = (project / "params.yaml").read_text()
    for changes, stages in [
        ({"evaluate": {"batch_size": 17}}, {"evaluate"}),
        # crossval reads train and augment too; without folds it runs in a moment.
        ({"train": {"lr": 0.002}}, {"train", "crossval"}),
        ({"train": {"model": "mobilenet_v3_small"}}, {"pretrained", "train", "crossval"}),
        ({"augment": {"affine_p": 0.5}}, {"train", "crossval"}),
        # the plan splits the data as prepare does (null budget: an empty plan at once)
        ({"prepare": {"seed": 1}}, {"plan", "prepare"}),
        ({"prepare": {"folds": 3}}, {"prepare"}),
        ({"plan": {"timed_steps": 3}}, {"plan"}),
        ({"data": {"seed": 1}}, {"download"}),
        ({"notes": {"author": "someone", "ticket": 12}}, set()),  # read by no stage
    ]:
        edit_params(project, **changes)
        assert changed_stages(project) == stages, changes
        (project / "params.yaml").write_text(original)
    edit_params(project, evaluate={"batch_size": 17})
    assert repro(project) == ["evaluate"]
    edit_params(project, prepare={"seed": 1})
    assert set(repro(project)) == {"prepare", "plan", "train", "crossval", "evaluate"}
    out = sh("dvc", "repro", cwd=project).stdout
    assert stages_run(out) == [] and "Data and pipelines are up to date" in out


def test_changed_resolution_reruns_download_after_a_cached_run(reproduced: Path) -> None:
    """The baseline's download (32 px) is in DVC's run cache; another resolution must run
    the stage, not restore that entry (a param named `size` did: iterative/dvc#10296)."""
    project = reproduced
    meta = project / "data/raw/dataset.json"
    assert json.loads(meta.read_text())["image_shape"] == [32, 32]
    edit_params(project, data={"resolution": 48})
    assert repro(project, "download") == ["download"]
    assert json.loads(meta.read_text())["image_shape"] == [48, 48]
    edit_params(project, data={"resolution": 32})  # back: restored from the run cache
    out = sh("dvc", "repro", "download", cwd=project).stdout
    assert stages_run(out) == [] and "Stage 'download' is cached - skipping run" in out
    assert json.loads(meta.read_text())["image_shape"] == [32, 32]


def test_forced_repro_is_byte_identical(reproduced: Path) -> None:
    project = reproduced

    def snapshot() -> dict[str, str]:
        files = ["models/model.pt", "metrics/evaluate.json", "metrics/evaluate_detail.json",
                 "metrics/prepare.json", "metrics/prepare_detail.json", "metrics/train.json",
                 "metrics/evaluate/roc.json", "metrics/evaluate/predictions.csv",
                 "data/raw/images.npy", "data/prepared/train_images.npy",
                 "metrics/prepare_preview.png", "metrics/prepare_counts.json"]
        snap = {f: digest(project / f) for f in files}
        train = json.loads((project / "metrics/train_detail.json").read_text())
        # Wall-clock figures are the only fields allowed to differ between runs; they are
        # in the detail file only, never in the metrics.
        snap["train_detail.json"] = json.dumps(
            {k: v for k, v in train.items()
             if k not in ("train_seconds", "train_images_per_second")})
        return snap

    first = snapshot()
    assert repro(project, "-f") == ALL
    assert snapshot() == first
    # Identical models: `dvc metrics diff` against the commit prints nothing at all.
    assert sh("dvc", "metrics", "diff", cwd=project).stdout == ""


def test_exp_run_and_metrics_diff(reproduced: Path) -> None:
    project = reproduced
    out = sh("dvc", "exp", "run", "-S", "train.lr=0.01", cwd=project).stdout
    assert stages_run(out) == ["train", "crossval", "evaluate"]
    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=project).stdout)
    changed = {path: keys for path, keys in diff.items() if keys}
    assert "metrics/train.json" in changed and "metrics/evaluate.json" in changed
    # One param, one screen: a row per changed headline figure of train and evaluate
    # (at most 4 + 9 for a binary model), no timings, hashes or per-class repeats.
    rows = [f"{path}:{key}" for path, keys in changed.items() for key in keys]
    assert set(changed) == {"metrics/train.json", "metrics/evaluate.json"}, rows
    assert len(rows) <= 15, rows
    table = sh("dvc", "metrics", "diff", cwd=project).stdout.splitlines()
    assert table[0].split()[:2] == ["Path", "Metric"] and len(table) == 1 + len(rows)
    params = json.loads(sh("dvc", "params", "diff", "--json", cwd=project).stdout)
    lr = params["params.yaml"]["train.lr"]
    committed = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert (lr["old"], lr["new"]) == (committed["train"]["lr"], 0.01)
    names = sh("dvc", "exp", "list", "--name-only", cwd=project).stdout.split()
    assert len(names) == 1  # the experiment is recorded and can be shared or applied


@pytest.mark.parametrize(
    ("section", "values", "expected", "stage", "output"),
    [
        ("train", {"modle": "cnn"}, "unknown key 'train.modle' (did you mean 'model'?)",
         "train", "models/model.pt"),
        ("train", {"lr": "fast"}, "'train.lr' must be a number, got 'fast'", "train",
         "models/model.pt"),
        # train.model is read first by the pretrained stage, which refuses it
        ("train", {"model": "resnet9000"}, "'train.model' must be one of 'cnn', 'mobilenet_v2'",
         "pretrained", "models/pretrained"),
        # the plan splits the data as prepare will, so it reads the section first
        ("prepare", {"channels": 2}, "'prepare.channels' must be one of 'auto', 1, 3",
         "prepare, checked by stage plan", "data/plan.yaml"),
    ],
)
def test_bad_params_fail_in_one_line_without_outputs(reproduced: Path, section: str,
                                                     values: dict, expected: str, stage: str,
                                                     output: str) -> None:
    project = reproduced
    edit_params(project, **{section: values})
    proc = sh("dvc", "repro", cwd=project, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert f"(stage {stage})" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (project / output).exists()  # the failed stage's output is gone, not stale
    assert not list(project.rglob(".tmp-*"))


def test_killed_train_stage_leaves_nothing_dvc_could_cache(reproduced: Path) -> None:
    project = reproduced
    model_before = digest(project / "models/model.pt")
    lock_before = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]
    edit_params(project, train={"epochs": 500})
    launched = time.time()
    proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        curve = project / "metrics/train/plots/metrics/val/auc.tsv"
        deadline = time.monotonic() + 120
        # Wait for this run's curve (the baseline's is still on disk) to show 2 epochs.
        while not (curve.exists() and curve.stat().st_mtime > launched
                   and len(curve.read_text().splitlines()) > 2):
            assert proc.poll() is None, "dvc repro ended before it could be killed"
            assert time.monotonic() < deadline, "training never logged an epoch"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, as a crash would
        proc.wait()
    assert not (project / "models/model.pt").exists()
    assert not (project / "metrics/train.json").exists()
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"] == lock_before
    assert sh("dvc", "commit", "-f", "train", cwd=project, check=False).returncode != 0
    edit_params(project, train={"epochs": 2})
    # Every output of the locked train run is in DVC's cache (model and curves cached,
    # metrics and preview copied there for the run cache), so DVC normally restores the
    # stage ("is cached - skipping run"); in 1 of 5 runs here it retrained instead (cause
    # not pinned down). Either way training is deterministic and the model is the same;
    # a retrained run's curves carry new timestamps, so evaluate, whose report shows them,
    # then reruns too (to the same figures).
    out = sh("dvc", "repro", cwd=project).stdout
    assert stages_run(out) in (["train"], ["train", "evaluate"]) or (
        stages_run(out) == [] and "Stage 'train' is cached - skipping run" in out), out
    assert digest(project / "models/model.pt") == model_before
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=project).stdout
    # No temporary of an output survives. The one file a kill can leave is a half-saved
    # training state (`.tmp-train_state.pt.*`) when SIGKILL lands during its save: scratch
    # that git ignores, never cached, and removed by the next run that trains.
    temps = list(project.rglob(".tmp-*"))
    assert all(p.name.startswith(".tmp-train_state.pt.") for p in temps), temps
    for p in temps:
        sh("git", "check-ignore", "-q", str(p.relative_to(project)), cwd=project)


def test_killed_training_resumes_to_the_uninterrupted_model(reproduced: Path) -> None:
    """SIGKILL `dvc repro` mid-training; the next `dvc repro` continues from the last
    finished epoch and ends with the model an uninterrupted run makes, byte for byte."""
    project = reproduced
    edit_params(project, train={"epochs": 40})
    assert repro(project) == ["train", "crossval", "evaluate"]
    uninterrupted = digest(project / "models/model.pt")
    state = project / "models/train_state.pt"
    assert not state.exists()  # removed once the model is written

    kill_at_epoch(["dvc", "repro", "-f", "-s", "train"], state, 3, project, tool_env())
    assert not (project / "models/model.pt").exists()

    # -f: the finished 40-epoch run is in DVC's cache, which plain `dvc repro` would
    # restore; a run of params that never finished resumes the same way without it.
    out = sh("dvc", "repro", "-f", "-s", "train", cwd=project)
    assert stages_run(out.stdout)[0] == "train"
    assert "resuming after epoch" in out.stderr
    assert digest(project / "models/model.pt") == uninterrupted
    assert not state.exists()
