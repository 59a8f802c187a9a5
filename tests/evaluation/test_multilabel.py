"""Multi-label tasks end to end: a store with independent findings per image is learned
(sigmoid, BCE), evaluated per finding with thresholds chosen on val, explained with
Grad-CAM, and predicted from image files exactly as evaluated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from medpipe import PipelineError
from medpipe.commands import predict
from medpipe.data import loader, store
from medpipe.evaluation import multilabel
from medpipe.inference import imagefiles
from medpipe.models import checkpoint
from medpipe.params.loading import parse_section
from medpipe.params.sections import AugmentParams, EvaluateParams, TrainParams
from medpipe.task import MultiLabel
from medpipe.training import loop, optim
from stages import evaluate as evaluate_stage
from stages import train as train_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
FINDINGS = ["mass", "nodule", "effusion"]
SIZE = 24
CFG = EvaluateParams(split="test", batch_size=32, device="cpu", threshold="youden",
                     target_sensitivity=0.9, bootstrap=200, seed=0, calibration_bins=10,
                     gradcam=4, tta="none")


def train_cfg(**changes) -> TrainParams:
    values = {**PARAMS["train"], "model": "cnn", "dropout": 0.0, "batch_size": 32, "lr": 0.01,
              "epochs": 8, "device": "cpu", "seed": 0, "schedule": "constant",
              "warmup_epochs": 0, **changes}
    return parse_section("train", values, stage="train")


AUG: AugmentParams = parse_section("augment", PARAMS["augment"], stage="train")


def make_store(root: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Grey noise images; each finding, present with probability 0.4 independently of the
    others, adds a bright blob at its own place. Labels are multi-hot uint8 (N, 3), and 8%
    of them are flipped (reader disagreement), so no model is right on every case."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": 240, "val": 80, "test": 80}
    places = [(slice(2, 9), slice(2, 9)), (slice(2, 9), slice(15, 22)),
              (slice(15, 22), slice(8, 16))]
    rows, all_images = [], []
    root.mkdir(parents=True)
    for split, n in sizes.items():
        truth = rng.random((n, len(FINDINGS))) < 0.4
        images = rng.integers(30, 130, (n, 1, SIZE, SIZE)).astype(np.uint8)
        for k, (r, c) in enumerate(places):
            images[truth[:, k], 0, r, c] += 100
        labels = (truth ^ (rng.random(truth.shape) < 0.08)).astype(np.uint8)
        np.save(store.images_path(root, split), images)
        np.save(store.labels_path(root, split), labels)
        rows += [{"split": split, "index": i, "source_id": f"{split}-{i:03d}"} for i in range(n)]
        all_images.append(images)
    train = all_images[0].astype(np.float64) / 255.0
    stats = {"task": "multilabel", "classes": FINDINGS, "image_size": SIZE, "channels": 1,
             "mean": [round(float(train.mean()), 6)], "std": [round(float(train.std()), 6)]}
    (root / store.STATS).write_text(json.dumps(stats))
    pd.DataFrame(rows).to_csv(root / store.MANIFEST, index=False)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A multi-label store, a CNN trained on it by the train stage, one evaluate run."""
    root = tmp_path_factory.mktemp("multilabel")
    data = make_store(root / "prepared")
    summary = train_stage.train(train_cfg(balance="loss"), AUG, data, root / "model.pt",
                                root / "train.json")
    metrics = root / "metrics"
    evaluated = evaluate_stage.evaluate(CFG, root / "model.pt", data, metrics / "evaluate.json",
                                        metrics / "evaluate", metrics / "report.md",
                                        metrics / "gradcam")
    return SimpleNamespace(root=root, data=data, train=summary, summary=evaluated,
                           model=root / "model.pt", metrics=metrics)


def test_training_learns_every_finding(trained: SimpleNamespace) -> None:
    assert trained.train["val_auc"] > 0.85  # chance 0.5; the flipped labels cap it near 0.93
    ckpt = torch.load(trained.model, weights_only=True)
    assert ckpt["task"] == "multilabel" and ckpt["classes"] == FINDINGS


def test_evaluation_reports_each_finding_and_the_mean(trained: SimpleNamespace) -> None:
    s = json.loads((trained.metrics / "evaluate_detail.json").read_text())
    assert s["task"] == "multilabel" and s["findings"] == FINDINGS
    assert set(s["per_label"]) == set(FINDINGS)
    test = store.load_split(trained.data, "test")
    probs = pd.read_csv(trained.metrics / "evaluate" / "predictions.csv")
    p = probs[[f"p_{f}" for f in FINDINGS]].to_numpy()
    for k, name in enumerate(FINDINGS):  # each AUC is the finding's own, as sklearn has it
        assert s["per_label"][name]["auc"] == pytest.approx(
            roc_auc_score(test.labels[:, k], p[:, k]), abs=1e-4)
        assert s["per_label"][name]["positives"] == int(test.labels[:, k].sum())
    assert s["roc_auc"] == pytest.approx(np.mean([s["per_label"][f]["auc"] for f in FINDINGS]))
    assert s["roc_auc"] > 0.85
    ci = s["ci95"]["roc_auc"]
    assert ci["low"] <= s["roc_auc"] <= ci["high"] and ci["high"] - ci["low"] < 0.2
    thresholds = s["threshold"]["per_label"]
    assert s["threshold"]["chosen_on"] == "val"
    assert all(0 < thresholds[f]["value"] < 1 for f in FINDINGS)
    assert len({thresholds[f]["value"] for f in FINDINGS}) > 1  # one per finding
    for k, name in enumerate(FINDINGS):  # the calls are made at those thresholds
        called = (p[:, k] >= thresholds[name]["value"] - 1e-6).astype(int)
        assert (probs[f"pred_{name}"].to_numpy() == called).mean() > 0.95
        assert (probs[f"true_{name}"].to_numpy() == test.labels[:, k]).all()
        at = s["at_threshold"]["per_label"][name]
        assert 0.0 <= at["sensitivity"] <= 1.0 and 0.0 <= at["specificity"] <= 1.0
    assert s["sensitivity"] > 0.7 and s["at_threshold"]["specificity"] > 0.7


def test_report_plots_and_heat_maps(trained: SimpleNamespace) -> None:
    text = (trained.metrics / "report.md").read_text()
    assert text.startswith("# Evaluation on the test split (multi-label)")
    for name in FINDINGS:
        assert f"\n| {name} | " in text
    assert "Mean ROC AUC over the findings: **" in text
    roc = json.loads((trained.metrics / "evaluate" / "roc.json").read_text())
    assert {r["class"] for r in roc} == set(FINDINGS)
    pred = pd.read_csv(trained.metrics / "evaluate" / "predictions.csv")
    assert {"actual", "predicted", "predicted_at_threshold"} <= set(pred.columns)
    maps = sorted((trained.metrics / "gradcam").glob("*.png"))
    assert len(maps) == 4
    assert all(any(f"_{f}_true-" in m.name for f in FINDINGS) for m in maps)
    assert {m.name.split("_")[1] for m in maps} == {"correct", "wrong"}
    assert "](gradcam)" in text


def test_predicting_the_test_pngs_gives_evaluate_probabilities_and_calls(
        trained: SimpleNamespace, tmp_path: Path) -> None:
    test = store.load_split(trained.data, "test")
    for i, image in enumerate(test.images):
        Image.fromarray(np.asarray(image[0]), mode="L").save(tmp_path / f"test-{i:03d}.png")
    thresholds = predict.threshold_from_metrics(trained.metrics / "evaluate_detail.json",
                                                trained.model)
    assert isinstance(thresholds, list) and len(thresholds) == len(FINDINGS)
    table, _ = imagefiles.predict_files(trained.model, imagefiles.find_images(tmp_path),
                                        thresholds)
    evaluated = pd.read_csv(trained.metrics / "evaluate" / "predictions.csv")
    for name in FINDINGS:
        assert np.allclose(table[f"p_{name}"], evaluated[f"p_{name}"], atol=1e-6)
        assert (table[f"pred_{name}"] == evaluated[f"pred_{name}"]).all()
    assert (table["predicted"] == evaluated["predicted_at_threshold"]).all()
    at_half, _ = imagefiles.predict_files(trained.model, imagefiles.find_images(tmp_path),
                                          0.5)
    assert (at_half["predicted"] == evaluated["predicted"]).all()


def test_balanced_sampler_is_refused_for_multilabel(tmp_path: Path) -> None:
    data = make_store(tmp_path / "prepared", sizes={"train": 8, "val": 8, "test": 8})
    with pytest.raises(PipelineError, match=r"'train.balance' is 'sampler'.*multi-label"):
        train_stage.train(train_cfg(balance="sampler", epochs=1), AUG, data,
                          tmp_path / "model.pt", tmp_path / "train.json")
    assert not (tmp_path / "model.pt").exists()


def test_loss_balance_weighs_each_findings_positives() -> None:
    labels = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 1]], dtype=torch.float32)
    cfg = train_cfg(balance="loss", label_smoothing=0.0)
    loss = optim.make_loss(cfg, MultiLabel(["a", "b"]), labels, torch.device("cpu"))
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    expected = F.binary_cross_entropy_with_logits(logits, labels,
                                                  pos_weight=torch.tensor([3.0, 1.0]))
    assert loss(logits, labels) == pytest.approx(float(expected))
    plain = optim.make_loss(train_cfg(balance="none"), MultiLabel(["a", "b"]), labels,
                            torch.device("cpu"))
    assert plain(logits, labels) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, labels)))


def test_engine_validation_figures_for_multilabel() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits from the image mean
            m = x.mean((1, 2, 3))
            return torch.stack([m * 8 - 4, 4 - m * 8], dim=1)

    images = np.stack([np.full((1, 4, 4), v, dtype=np.uint8) for v in (20, 60, 200, 240)])
    labels = np.array([[0, 1], [0, 1], [1, 0], [1, 1]], dtype=np.uint8)
    batches = loader.Batches(store.Split(images, labels), 2, shuffle=False)
    got = loop.evaluate(Fixed(), batches, torch.device("cpu"))
    x = torch.from_numpy(images).float() / 255
    logits = Fixed()(x)
    target = torch.from_numpy(labels).float()
    assert got["loss"] == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, target)),
                                        abs=1e-6)
    assert got["accuracy"] == pytest.approx(((logits >= 0) == (target == 1)).float().mean())
    assert got["auc"] == pytest.approx((1.0 + 2 / 3) / 2)  # finding 2: 1 of 3 pairs wrong


def test_a_finding_absent_from_the_split_is_nan_with_a_warning() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 3)) < 0.5).astype(np.uint8)
    labels[:, 2] = 0  # no positive for the third finding
    probs = np.clip(labels * 0.6 + rng.random((60, 3)) * 0.4, 0, 1)
    cfg = dataclasses.replace(CFG, threshold=0.5)
    with pytest.warns(UserWarning, match="finding 'effusion' has no positive image"):
        s, _ = multilabel.summarise(labels, probs, MultiLabel(FINDINGS), cfg)
    assert np.isnan(s["per_label"]["effusion"]["auc"])
    assert np.isnan(s["per_label"]["effusion"]["sensitivity"])
    assert s["roc_auc"] == pytest.approx(np.mean([s["per_label"][f]["auc"]
                                                  for f in FINDINGS[:2]]))
    assert s["threshold"]["chosen_on"] == "params"
    assert np.isfinite([s["ci95"]["roc_auc"]["low"], s["ci95"]["roc_auc"]["high"]]).all()


def test_a_model_of_the_other_task_is_refused(tmp_path: Path) -> None:
    stats = {"classes": FINDINGS, "image_size": SIZE, "channels": 1}
    ckpt = {"task": "multilabel", "classes": FINDINGS}
    with pytest.raises(PipelineError, match="a multilabel model, but .* a multiclass task"):
        checkpoint.check_matches_store(tmp_path / "m.pt", ckpt, tmp_path, stats)
    with pytest.raises(PipelineError, match="a multiclass model, but .* a multilabel task"):
        checkpoint.check_matches_store(tmp_path / "m.pt", {"classes": FINDINGS}, tmp_path,
                                   {**stats, "task": "multilabel"})
