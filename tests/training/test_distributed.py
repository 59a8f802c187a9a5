"""DistributedDataParallel on CPU: two gloo processes under torchrun against one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medpipe.data import phantoms, prepare
from medpipe.data.raw import RawDataset
from medpipe.params.loading import parse_section

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    classes = ["normal", "opacity"]
    images, labels = phantoms.generate(60, classes, 32, seed=0)
    # An easy task, so that both runs really learn: class 1 is brighter.
    images = np.clip(images.astype(np.int16) + 25 * labels[:, None, None], 0, 255)
    raw = RawDataset(classes, images.astype(np.uint8), labels,
                     [str(i) for i in range(len(labels))])
    prep = yaml.safe_load((ROOT / "params.yaml").read_text())["prepare"]
    prep.update(image_size=32)
    out = tmp_path_factory.mktemp("ddp") / "prepared"
    prepare.prepare(raw, out, parse_section("prepare", prep, stage="prepare"))
    return out


def run_train(tmp: Path, store_dir: Path, nproc: int) -> dict:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    # No dropout: the ranks' dropout masks differ from one process's by design.
    doc["train"].update(nproc=nproc, epochs=6, lr=0.003, batch_size=16, dropout=0.0,
                        device="cpu", schedule="constant", warmup_epochs=0)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train", "--params", str(params), "--data", str(store_dir),
         "--model", str(tmp / "model.pt"), "--metrics", str(tmp / "train.json"),
         "--live", str(tmp / "live"), "--preview", str(tmp / "preview.png"),
         "--state", str(tmp / "state.pt")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp / "train_detail.json").read_text())


def test_two_gloo_processes_match_one_process(tmp_path: Path, store_dir: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = run_train(tmp_path / "one", store_dir, nproc=1)
    two = run_train(tmp_path / "two", store_dir, nproc=2)
    assert one["processes"] == 1 and two["processes"] == 2
    # Each rank takes half of every batch and DDP averages the gradients, so the two runs
    # differ only in floating-point summation order.
    for key in ("val_loss", "val_accuracy", "val_auc"):
        assert two[key] == pytest.approx(one[key], abs=1e-3), key
    assert two["best_epoch"] == one["best_epoch"]
    # The whole trajectory, not just the best epoch: every epoch's losses agree.
    for curve in ("train/loss", "val/loss"):
        a, b = (curve_of(tmp_path / run / "live", curve) for run in ("one", "two"))
        assert len(a) == len(b) == 6
        assert b == pytest.approx(a, abs=1e-4), curve
    train_loss = curve_of(tmp_path / "one" / "live", "train/loss")
    assert train_loss[-1] < 0.8 * train_loss[0]  # it learned: a comparison worth making
    # Only rank 0 wrote files: one model, one curve directory, no leftover state.
    assert (tmp_path / "two" / "model.pt").is_file()
    assert not (tmp_path / "two" / "state.pt").exists()
    rows = (tmp_path / "two" / "live/plots/metrics/val/auc.tsv").read_text().splitlines()
    assert len(rows) == 1 + 6  # header + one row per epoch, written once (by rank 0)


def curve_of(live: Path, name: str) -> list[float]:
    """Per-epoch values of a DVCLive metric (its .tsv: step, then the value)."""
    rows = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[-1]) for row in rows]
