"""Cross-validation end to end without DVC: a model per fold, kept and skipped when
current, a lost fold retrained alone; evaluate's fold and ensemble figures; the ensemble
in prediction and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import kill_at_epoch
from tinymodels import aug_cfg, train_cfg

from medpipe import PipelineError
from medpipe.data import prepare, store
from medpipe.data.raw import RawDataset
from medpipe.inference import ensemble, export, imagefiles
from medpipe.models import checkpoint
from medpipe.params.sections import EvaluateParams, PrepareParams
from stages import crossval
from stages import evaluate as evaluate_stage

CLASSES = ["normal", "opacity"]


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folded")
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 60)
    images = rng.integers(0, 140, (120, 16, 16)).astype(np.uint8)
    images[labels == 1, 5:11, 5:11] += 50
    raw = RawDataset(classes=CLASSES, images=images, labels=labels,
                     ids=[f"img-{i:03d}" for i in range(120)])
    prepare.prepare(raw, root / "prepared", PrepareParams(
        val_fraction=0.2, test_fraction=0.25, image_size=16, channels=1, workers=1, folds=3))
    crossval.crossval(train_cfg(), aug_cfg(), root / "prepared", root / "folds",
                      root / "crossval.json")
    return root


def test_a_model_per_fold_and_their_figures(folded: Path) -> None:
    paths = ensemble.members(folded / "folds")
    assert [p.name for p in paths] == ["fold_0.pt", "fold_1.pt", "fold_2.pt"]
    assert not list((folded / "folds").glob("*.state.pt"))
    summary = json.loads((folded / "crossval_detail.json").read_text())
    assert summary["folds"] == 3 and summary["trained"] == 3
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1, 2]
    aucs = [f["val_auc"] for f in summary["per_fold"]]
    assert summary["mean"]["val_auc"] == pytest.approx(np.mean(aucs), abs=1e-6)
    assert summary["sd"]["val_auc"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-6)
    headline = json.loads((folded / "crossval.json").read_text())
    assert headline == {"folds": 3, "trained": 3,
                        **{f"{f}_{s}": summary[s][f] for f in ("val_auc", "val_accuracy",
                                                               "val_loss") for s in ("mean", "sd")}}


def test_current_folds_are_kept_and_a_lost_fold_is_trained_alone(folded: Path,
                                                                 tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "folds"
    shutil.copytree(folded / "folds", work)
    before = {p.name: p.read_bytes() for p in ensemble.members(work)}
    (work / "fold_1.pt").unlink()
    crossval.crossval(train_cfg(), aug_cfg(), folded / "prepared", work, None)
    after = {p.name: p.read_bytes() for p in ensemble.members(work)}
    assert after["fold_0.pt"] == before["fold_0.pt"] and after["fold_2.pt"] == before["fold_2.pt"]
    # Retrained alone, from the same params and data: the same weights as in the full run.
    old = checkpoint.safe_load(folded / "folds" / "fold_1.pt", "cpu", "a fold model")
    new = checkpoint.safe_load(work / "fold_1.pt", "cpu", "a fold model")
    assert all(torch.equal(old["state_dict"][k], new["state_dict"][k]) for k in old["state_dict"])
    (work / "fold_7.pt").write_bytes(b"from an earlier, larger prepare.folds")
    crossval.crossval(train_cfg(), aug_cfg(), folded / "prepared", work, None)
    assert not (work / "fold_7.pt").exists()
    with pytest.raises(PipelineError, match=r"--fold 5: the store has 3 folds"):
        crossval.crossval(train_cfg(), aug_cfg(), folded / "prepared", work, None, only=5)


def test_evaluate_reports_the_folds_and_the_ensemble(folded: Path, tmp_path: Path) -> None:
    cfg = EvaluateParams(device="cpu", bootstrap=100, gradcam=0)
    model = ensemble.members(folded / "folds")[0]  # any model for the main summary
    summary = evaluate_stage.evaluate(cfg, model, folded / "prepared", tmp_path / "e.json",
                                      tmp_path / "plots", tmp_path / "report.md",
                                      folds_dir=folded / "folds")
    section, ens = summary["folds"], summary["ensemble"]
    assert section["k"] == 3 and len(section["per_fold"]) == 3
    test_aucs = [f["test"]["roc_auc"] for f in section["per_fold"]]
    assert section["mean"]["test"]["roc_auc"] == pytest.approx(np.mean(test_aucs))
    assert ens["members"] == 3 and ens["threshold"]["chosen_on"] == "out-of-fold"
    assert ens["n"] == summary["n"] and ens["ci95"]["roc_auc"]["low"] <= ens["roc_auc"]
    assert ens["model_sha256"] == ensemble.digest(folded / "folds")
    assert "## Cross-validation" in (tmp_path / "report.md").read_text()


def test_the_ensemble_averages_its_members_in_prediction_and_export(folded: Path,
                                                                    tmp_path: Path) -> None:
    model, ckpt = ensemble.load_model(folded / "folds", "cpu")
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    members = [checkpoint.load_checkpoint(p, "cpu")[0] for p in ensemble.members(folded / "folds")]
    mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(model(x), 1), mean, atol=1e-6)
    meta = export.export_torchscript(folded / "folds", tmp_path / "ensemble.ts")
    assert meta["members"] == ["fold_0.pt", "fold_1.pt", "fold_2.pt"]
    traced = torch.jit.load(str(tmp_path / "ensemble.ts"))
    assert torch.allclose(torch.softmax(traced(x), 1), mean, atol=1e-5)

    from PIL import Image

    images = store.load_split(folded / "prepared", "test").images[:4, 0]
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.asarray(im)).save(paths[-1])
    table, _ = imagefiles.predict_files(folded / "folds", paths)
    x = torch.from_numpy(np.asarray(images)[:, None].astype(np.float32) / 255.0)
    mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0).detach().numpy()
    assert np.allclose(table["p_opacity"], mean[:, 1], atol=1e-5)


def test_a_folder_without_fold_models_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"empty: no fold models"):
        ensemble.load_model(tmp_path / "empty", "cpu")
    assert ensemble.default_model(tmp_path) == tmp_path / "model.pt"


def test_a_run_killed_during_a_fold_resumes_that_fold(folded: Path, tmp_path: Path) -> None:
    """SIGKILL the stage while fold 1 trains: the next run keeps fold 0, resumes fold 1
    from its last saved epoch, and ends with the fold models of an uninterrupted run."""
    import os
    import subprocess
    import sys

    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    doc["train"].update(epochs=12, batch_size=16, schedule="constant", warmup_epochs=0,
                        device="cpu")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))

    def command(models: Path) -> list[str]:
        return [sys.executable, "-m", "stages.crossval", "--params", str(params),
                "--data", str(folded / "prepared"), "--models", str(models),
                "--metrics", str(models.parent / f"{models.name}.json"),
                "--weights", str(tmp_path / "no-weights")]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    subprocess.run(command(tmp_path / "whole"), cwd=root, env=env, check=True,
                   capture_output=True)

    killed = tmp_path / "killed"
    state = killed / "fold_1.state.pt"
    kill_at_epoch(command(killed), state, 3, root, env)
    assert (killed / "fold_0.pt").exists() and not (killed / "fold_1.pt").exists()

    again = subprocess.run(command(killed), cwd=root, env=env, check=True,
                           capture_output=True, text=True)
    assert "fold 1 of 3: its model is current" in again.stderr
    assert "fold 2: training" in again.stderr and "resuming after epoch" in again.stderr
    assert "fold 1: training" not in again.stderr
    for k in range(3):
        whole = checkpoint.safe_load(tmp_path / "whole" / f"fold_{k}.pt", "cpu", "a fold")
        resumed = checkpoint.safe_load(killed / f"fold_{k}.pt", "cpu", "a fold")
        assert all(torch.equal(whole["state_dict"][n], resumed["state_dict"][n])
                   for n in whole["state_dict"]), f"fold {k}"
    assert not list(killed.glob("*.state.pt"))
