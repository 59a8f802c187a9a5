"""The evaluate stage's files, and prediction from image files matching it exactly."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_stage_cli
from PIL import Image

from medpipe import PipelineError
from medpipe.commands import predict
from medpipe.data import prepare, store
from medpipe.data.raw import RawDataset
from medpipe.inference import imagefiles
from medpipe.models import architectures, checkpoint
from medpipe.params.loading import parse_section
from medpipe.params.sections import EvaluateParams, PrepareParams
from medpipe.training import loop
from medpipe.utils import seeding
from stages import evaluate as evaluate_stage

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["normal", "opacity"]
CFG = EvaluateParams(split="test", batch_size=7, device="cpu", threshold="youden",
                     target_sensitivity=0.9, bootstrap=100, seed=0, calibration_bins=5,
                     gradcam=0, tta="none")


def make_raw(n_per_class: int = 16, size: int = 40, seed: int = 0) -> RawDataset:
    """Grey images whose class shows as a bright square, at another size than the store."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    images = rng.integers(0, 160, (len(labels), size, size)).astype(np.uint8)
    images[labels == 1, 10:20, 10:20] += 90
    return RawDataset(classes=CLASSES, images=images, labels=labels,
                      ids=[f"img-{i:03d}" for i in range(len(labels))])


def make_model(path: Path, store_dir: Path, seed: int = 0) -> None:
    """A CNN trained for a few epochs: probabilities spread over (0, 1), both classes."""
    train = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    cfg = parse_section("train", {**train["train"], "model": "cnn", "dropout": 0.0,
                                  "batch_size": 8, "seed": seed, "lr": 0.01, "epochs": 8,
                                  "monitor": "val_loss", "device": "cpu",
                                  "schedule": "constant", "warmup_epochs": 0}, stage="train")
    arch = architectures.make_arch(cfg, store.read_stats(store_dir))
    seeding.seed_everything(seed)
    model = architectures.build_model(arch)
    loop.fit(model, store.load_split(store_dir, "train"), store.load_split(store_dir, "val"),
               cfg, torch.device("cpu"))
    checkpoint.save_checkpoint(path, model.eval(), arch=arch, classes=CLASSES, params={}, info={})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A store (16 px, from 40 px raw images), a model and one evaluate run."""
    root = tmp_path_factory.mktemp("evaluated")
    raw = make_raw()
    prep = PrepareParams(seed=0, val_fraction=0.25, test_fraction=0.25, image_size=16,
                         channels=1, on_error="fail", workers=1)
    prepare.prepare(raw, root / "prepared", prep)
    make_model(root / "model.pt", root / "prepared")
    summary = evaluate_stage.evaluate(CFG, root / "model.pt", root / "prepared",
                                      root / "metrics" / "evaluate.json",
                                      root / "metrics" / "evaluate",
                                      root / "metrics" / "report.md")
    return SimpleNamespace(root=root, raw=raw, summary=summary, model=root / "model.pt",
                           store=root / "prepared", metrics=root / "metrics")


def export_split_as_png(store_dir: Path, split: str, out: Path) -> list[str]:
    """The store's images of ``split`` as 8-bit grey PNGs named by their source id."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = pd.read_csv(store_dir / store.MANIFEST)
    ids = manifest.loc[manifest["split"] == split, "source_id"].tolist()
    for image, name in zip(store.load_split(store_dir, split).images, ids, strict=True):
        Image.fromarray(np.asarray(image[0]), mode="L").save(out / f"{name}.png")
    return ids



def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return run_stage_cli("predict", predict, argv, capsys)


# ---------------------------------------------------------------------------- evaluate stage


def test_evaluate_writes_metrics_plots_and_report(evaluated: SimpleNamespace) -> None:
    saved = json.loads((evaluated.metrics / "evaluate_detail.json").read_text())
    for key in ["accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity",
                "ppv", "npv", "f1", "per_class", "threshold", "at_threshold", "ci95",
                "calibration", "bootstrap", "model_sha256"]:
        assert key in saved, key
    assert saved["threshold"]["chosen_on"] == "val" and 0 < saved["threshold"]["value"] < 1
    assert saved["bootstrap"]["resamples"] == 100 and saved["calibration"]["bins"] == 5
    headline = json.loads((evaluated.metrics / "evaluate.json").read_text())
    assert headline == {"roc_auc": saved["roc_auc"],
                        "roc_auc_low": saved["ci95"]["roc_auc"]["low"],
                        "roc_auc_high": saved["ci95"]["roc_auc"]["high"],
                        **{k: saved["at_threshold"][k] for k in ("accuracy", "balanced_accuracy",
                                                                 "sensitivity", "specificity")},
                        "threshold": saved["threshold"]["value"],
                        "ece": saved["calibration"]["ece"]}
    plots = evaluated.metrics / "evaluate"
    assert sorted(p.name for p in plots.iterdir()) == ["groups.json", "pr.json",
                                                       "predictions.csv", "reliability.json",
                                                       "roc.json"]
    assert json.loads((plots / "groups.json").read_text()) == []  # no evaluate.groups
    pred = pd.read_csv(plots / "predictions.csv")
    assert list(pred.columns) == ["id", "actual", "predicted", "predicted_at_threshold",
                                  "p_normal", "p_opacity"]
    at = pred["p_opacity"] >= saved["threshold"]["value"] - 1e-6
    assert (pred["predicted_at_threshold"] == np.where(at, "opacity", "normal")).mean() > 0.9
    rel = json.loads((plots / "reliability.json").read_text())
    assert sum(r["count"] for r in rel) == saved["n"] == len(pred)
    assert all(r["perfect"] == r["mean_probability"] for r in rel)
    assert {r["class"] for r in json.loads((plots / "pr.json").read_text())} == {"opacity"}
    text = (evaluated.metrics / "report.md").read_text()
    assert text.startswith("# Evaluation on the test split")
    for link in ["evaluate/roc.json", "evaluate/pr.json", "evaluate/reliability.json",
                 "evaluate/predictions.csv"]:
        assert f"]({link})" in text and (evaluated.metrics / link).is_file()
    assert not list(evaluated.metrics.rglob(".tmp-*"))


def test_evaluate_is_byte_identical_when_rerun(evaluated: SimpleNamespace,
                                               tmp_path: Path) -> None:
    evaluate_stage.evaluate(CFG, evaluated.model, evaluated.store, tmp_path / "e.json",
                            tmp_path / "evaluate", tmp_path / "report.md")
    for a, b in [("evaluate.json", "e.json"), ("evaluate_detail.json", "e_detail.json"),
                 ("report.md", "report.md"),
                 ("evaluate/predictions.csv", "evaluate/predictions.csv"),
                 ("evaluate/reliability.json", "evaluate/reliability.json")]:
        assert (evaluated.metrics / a).read_bytes() == (tmp_path / b).read_bytes(), a


# ----------------------------------------------------------------------------------- predict


def test_predicting_the_test_pngs_gives_evaluate_probabilities(evaluated: SimpleNamespace,
                                                               tmp_path: Path) -> None:
    ids = export_split_as_png(evaluated.store, "test", tmp_path / "png")
    paths = imagefiles.find_images(tmp_path / "png")
    assert [p.stem for p in paths] == sorted(ids)
    threshold = predict.threshold_from_metrics(evaluated.metrics / "evaluate_detail.json",
                                               evaluated.model)
    table, task = imagefiles.predict_files(evaluated.model, paths, threshold)
    assert task.positive_class == "opacity"
    table["id"] = [Path(p).stem for p in table["path"]]
    expected = pd.read_csv(evaluated.metrics / "evaluate" / "predictions.csv")
    merged = expected.merge(table, on="id", suffixes=("_eval", "_pred"))
    assert len(merged) == len(ids)
    for name in CLASSES:
        diff = (merged[f"p_{name}_eval"] - merged[f"p_{name}_pred"]).abs().max()
        assert diff <= 1e-6, (name, diff)
    assert (merged["predicted_at_threshold"] == merged["predicted_pred"]).all()


def test_prediction_preprocessing_equals_the_prepare_stage(evaluated: SimpleNamespace,
                                                         tmp_path: Path) -> None:
    """A raw 40 px image read from PNG becomes exactly the bytes the store holds for it."""
    manifest = pd.read_csv(evaluated.store / store.MANIFEST)
    test_rows = manifest[manifest["split"] == "test"]
    stored = store.load_split(evaluated.store, "test").images
    for _, row in test_rows.head(4).iterrows():
        raw_index = evaluated.raw.ids.index(row["source_id"])
        path = tmp_path / f"{row['source_id']}.png"
        Image.fromarray(evaluated.raw.images[raw_index], mode="L").save(path)
        x = imagefiles.prepare_image(imagefiles.read_image(path), channels=1, image_size=16)
        # What the model sees in training: the stored bytes, divided by 255 (engine).
        seen = torch.from_numpy(np.array(stored[row["index"]])).float().div_(255.0)
        assert torch.equal(x, seen)


def test_rgb_16_bit_tiff_and_palette_images_are_converted(evaluated: SimpleNamespace,
                                                          tmp_path: Path) -> None:
    """The same grey picture in lossless formats and modes gives the same prediction."""
    grey = evaluated.raw.images[3]
    files = {
        "grey.png": Image.fromarray(grey, mode="L"),
        "rgb.png": Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB"),
        "rgba.png": Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 255)]),
                                    mode="RGBA"),
        "sixteen.tif": Image.fromarray(grey.astype(np.uint16) * 257),
        "sixteen.png": Image.fromarray(grey.astype(np.uint16) * 257),
        "palette.bmp": Image.fromarray(grey, mode="L").convert("P"),
    }
    for name, img in files.items():
        img.save(tmp_path / name)
    assert imagefiles.read_image(tmp_path / "sixteen.tif").dtype == np.uint16
    table, _ = imagefiles.predict_files(evaluated.model, imagefiles.find_images(tmp_path))
    assert len(table) == len(files)
    p = table["p_opacity"].to_numpy()
    assert np.abs(p - p[0]).max() < 1e-5, table


def test_jpeg_grey_and_colour_are_read(evaluated: SimpleNamespace, tmp_path: Path) -> None:
    grey = evaluated.raw.images[3]
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.jpg", quality=95)
    Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.jpeg")
    assert imagefiles.read_image(tmp_path / "grey.jpg").shape == grey.shape
    assert imagefiles.read_image(tmp_path / "rgb.jpeg").shape == (*grey.shape, 3)
    table, _ = imagefiles.predict_files(evaluated.model, imagefiles.find_images(tmp_path))
    assert len(table) == 2 and table["p_opacity"].between(0, 1).all()


def test_grey_and_rgb_files_at_the_store_size_for_a_colour_model(tmp_path: Path) -> None:
    """A colour model's images already at its side: the grey ones are replicated to RGB
    without a resize in between, and give the prediction of their RGB copy."""
    train = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    cfg = parse_section("train", {**train["train"], "model": "cnn", "device": "cpu"},
                        stage="train")
    stats = {"channels": 3, "classes": CLASSES, "image_size": 16, "mean": [0.4, 0.5, 0.6],
             "std": [0.2, 0.25, 0.3]}
    arch = architectures.make_arch(cfg, stats)
    seeding.seed_everything(0)
    checkpoint.save_checkpoint(tmp_path / "model.pt", architectures.build_model(arch).eval(),
                               arch=arch, classes=CLASSES, params={}, info={})
    grey = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.png")
    x = imagefiles.prepare_image(grey, 3, 16)
    assert x.shape == (3, 16, 16)
    assert torch.equal(x[0], torch.from_numpy(grey).float() / 255.0)
    assert torch.equal(x[0], x[2])
    table, _ = imagefiles.predict_files(tmp_path / "model.pt", [tmp_path / "grey.png",
                                                                tmp_path / "rgb.png"])
    p = table["p_opacity"].to_numpy()
    assert len(table) == 2 and p[0] == p[1]


def test_csv_input_with_relative_paths(evaluated: SimpleNamespace, tmp_path: Path) -> None:
    names = [f"{i}.png" for i in sorted(export_split_as_png(evaluated.store, "test",
                                                            tmp_path / "png"))[:2]]
    # One path relative to the CSV's folder, one absolute.
    pd.DataFrame({"path": [f"png/{names[0]}", str(tmp_path / "png" / names[1])]}).to_csv(
        tmp_path / "list.csv", index=False)
    paths = imagefiles.find_images(tmp_path / "list.csv")
    assert paths == [tmp_path / "png" / names[0], tmp_path / "png" / names[1]]
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(PipelineError, match=r"bad\.csv: no 'path' column"):
        imagefiles.find_images(tmp_path / "bad.csv")


@pytest.mark.parametrize("tta", ["hflip", "flips"])
def test_test_time_flips_average_the_views_and_predict_follows_evaluate(
        evaluated: SimpleNamespace, tmp_path: Path, tta: str) -> None:
    """evaluate.tta averages the probabilities of the flipped images, on test and on the
    val split the threshold is chosen on; predict --metrics applies the same views."""
    import dataclasses

    cfg = dataclasses.replace(CFG, tta=tta)
    metrics = tmp_path / "metrics"
    summary = evaluate_stage.evaluate(cfg, evaluated.model, evaluated.store,
                                      metrics / "evaluate.json", metrics / "evaluate",
                                      metrics / "report.md")
    assert summary["tta"] == tta and "test-time" in (metrics / "report.md").read_text()
    model, _ = checkpoint.load_checkpoint(evaluated.model, torch.device("cpu"))
    images = np.asarray(store.load_split(evaluated.store, "test").images) / np.float32(255)
    dims = {"hflip": [(), (3,)], "flips": [(), (3,), (2,), (2, 3)]}[tta]
    with torch.no_grad():
        expected = np.mean([torch.softmax(model(torch.from_numpy(
            np.ascontiguousarray(np.flip(images, d) if d else images))), 1).numpy()
            for d in dims], axis=0)
    got = pd.read_csv(metrics / "evaluate" / "predictions.csv")
    assert np.abs(got["p_opacity"].to_numpy() - expected[:, 1]).max() < 1e-5
    plain = pd.read_csv(evaluated.metrics / "evaluate" / "predictions.csv")
    assert np.abs(got["p_opacity"] - plain["p_opacity"]).max() > 1e-3  # the views differ

    export_split_as_png(evaluated.store, "test", tmp_path / "png")
    out = tmp_path / "predictions.csv"
    predict.main(predict.get_args_parser().parse_args(
        ["--model", str(evaluated.model), "--metrics", str(metrics / "evaluate_detail.json"),
         "--out", str(out), str(tmp_path / "png")]))
    table = pd.read_csv(out)
    table["id"] = [Path(p).stem for p in table["path"]]
    merged = got.merge(table, on="id", suffixes=("_eval", "_pred"))
    assert len(merged) == len(got)
    assert (merged["p_opacity_eval"] - merged["p_opacity_pred"]).abs().max() <= 1e-6
    assert (merged["predicted_at_threshold"] == merged["predicted_pred"]).all()


def test_threshold_of_another_model_is_refused(evaluated: SimpleNamespace,
                                               tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    make_model(other, evaluated.store, seed=1)
    with pytest.raises(PipelineError, match="chosen for another model"):
        predict.threshold_from_metrics(evaluated.metrics / "evaluate_detail.json", other)


def test_cli_writes_csv_with_the_evaluate_threshold(evaluated: SimpleNamespace,
                                                    tmp_path: Path) -> None:
    """The real command, in a new interpreter."""
    export_split_as_png(evaluated.store, "test", tmp_path / "png")
    out = tmp_path / "predictions.csv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "medpipe", "predict", "--model",
                           str(evaluated.model), "--metrics",
                           str(evaluated.metrics / "evaluate_detail.json"), "--out", str(out),
                           str(tmp_path / "png")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "p_normal", "p_opacity", "predicted"]
    threshold = evaluated.summary["threshold"]["value"]
    detail = evaluated.metrics / "evaluate_detail.json"
    assert f"(threshold {threshold:.6g} from {detail})" in proc.stderr
    expected = np.where(table["p_opacity"] >= threshold, "opacity", "normal")
    near = (table["p_opacity"] - threshold).abs() < 1e-7  # rounding in the CSV
    assert (table["predicted"] == expected)[~near].all()
    assert math.isclose(table[["p_normal", "p_opacity"]].sum(axis=1).max(), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n broken"])
def test_unreadable_file_is_a_one_line_error_naming_it(
    evaluated: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    restore_logging: None, content: bytes,
) -> None:
    folder = tmp_path / "images"
    export_split_as_png(evaluated.store, "test", folder)
    bad = folder / "zz-broken.png"
    bad.write_bytes(content)
    out = tmp_path / "out.csv"
    code, err = run_cli(["--model", str(evaluated.model), "--out", str(out), str(folder)],
                        capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines[-1].startswith(f"error: {bad}: not a readable image"), err
    assert "Traceback" not in err and not out.exists()
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(("argv", "needle"), [
    (["--threshold", "1.5"], "--threshold must be a probability in (0, 1)"),
    (["--metrics", "missing.json"], "missing.json: not found"),
])
def test_bad_options_are_one_line_errors(evaluated: SimpleNamespace, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         restore_logging: None, argv: list[str],
                                         needle: str) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(evaluated.raw.images[0], mode="L").save(image)
    code, err = run_cli(["--model", str(evaluated.model), "--out", str(tmp_path / "o.csv"),
                         *argv, str(image)], capsys)
    assert code == 1 and needle in err.strip().splitlines()[-1], err


def test_the_headline_file_is_refused_naming_the_detail_file(
    evaluated: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    image, headline = tmp_path / "a.png", evaluated.metrics / "evaluate.json"
    Image.fromarray(evaluated.raw.images[0], mode="L").save(image)
    code, err = run_cli(["--model", str(evaluated.model), "--metrics", str(headline),
                         "--out", str(tmp_path / "o.csv"), str(image)], capsys)
    assert code == 1 and err.strip().splitlines()[-1] == (
        f"error: {headline}: the headline metrics only; pass its detail file, "
        f"{evaluated.metrics / 'evaluate_detail.json'}"), err


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda s: "{not json", ": not an evaluate metrics file"),
    (lambda s: json.dumps([s]), ": not an evaluate metrics file"),
    (lambda s: json.dumps({k: v for k, v in s.items() if k != "threshold"}),
     ": not an evaluate metrics file (no threshold.value or model_sha256)"),
    (lambda s: json.dumps({**s, "tta": "rot"}),
     ": unknown tta 'rot'; expected one of none, hflip, flips"),
], ids=["not-json", "a-list", "no-threshold", "unknown-tta"])
def test_malformed_metrics_file_is_a_one_line_error_naming_it(
    evaluated: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    restore_logging: None, edit: Any, needle: str,
) -> None:
    bad = tmp_path / "evaluate.json"
    bad.write_text(edit(evaluated.summary), encoding="utf-8")
    image, out = tmp_path / "a.png", tmp_path / "o.csv"
    Image.fromarray(evaluated.raw.images[0], mode="L").save(image)
    code, err = run_cli(["--model", str(evaluated.model), "--metrics", str(bad),
                         "--out", str(out), str(image)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines[-1] == f"error: {bad}{needle}", err
    assert "Traceback" not in err and not out.exists()


class Payload:
    """Unpickling this runs ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.marker,)


def test_model_file_with_pickled_code_is_refused_not_run(evaluated: SimpleNamespace,
                                                        tmp_path: Path) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "state_dict": Payload(marker)}, evil)
    image = tmp_path / "a.png"
    Image.fromarray(evaluated.raw.images[0], mode="L").save(image)
    with pytest.raises(PipelineError, match="refused: not a model file this pipeline wrote"
                       ) as caught:
        imagefiles.predict_files(evil, [image])
    assert not marker.exists()
    assert "weights_only" not in str(caught.value)


def test_model_file_of_random_bytes_is_a_one_line_refusal(
    evaluated: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    image = tmp_path / "a.png"
    Image.fromarray(evaluated.raw.images[0], mode="L").save(image)
    out = tmp_path / "out.csv"
    code, err = run_cli(["--model", str(bad), "--out", str(out), str(image)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines[-1] == (f"error: {bad}: refused: not a PyTorch file, or a "
                                       "corrupt or truncated one"), err
    assert "weights_only" not in err and "will likely succeed" not in err
    assert "Traceback" not in err and not out.exists()


def test_fixture_model_is_informative(evaluated: SimpleNamespace) -> None:
    """The comparisons above mean something only if probabilities vary."""
    pred = pd.read_csv(evaluated.metrics / "evaluate" / "predictions.csv")
    assert pred["p_opacity"].std() > 0.1
    assert set(pred["predicted"]) == set(CLASSES)
