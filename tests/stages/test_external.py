"""External test sets: prepared like the training store, scored by the unchanged model at
its own operating point; the set's params and classes checked in one line each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from imagefiles import make_folder
from tinymodels import fit_and_save, train_cfg

from medpipe import PipelineError
from medpipe.data import prepare, store
from medpipe.data.raw import RawDataset
from medpipe.params.loading import load_section
from medpipe.params.sections import EvaluateParams, PrepareParams
from stages import evaluate as evaluate_stage
from stages import external

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["normal", "opacity"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("external")
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 40)
    images = rng.integers(0, 140, (80, 12, 10)).astype(np.uint8)
    images[labels == 1, 3:9, 3:8] += 60
    raw = RawDataset(classes=CLASSES, images=images, labels=labels,
                     ids=[str(i) for i in range(80)])
    prepare.prepare(raw, root / "prepared", PrepareParams(image_size=8, channels=1, workers=1))
    fit_and_save(root / "prepared", root / "model.pt", train_cfg(), CLASSES)
    return root


def params_with(tmp_path: Path, sets: dict) -> Path:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["external"] = sets
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_an_external_folder_is_scored_at_the_model_s_own_threshold(trained: Path,
                                                                    tmp_path: Path) -> None:
    site = make_folder(tmp_path / "site_b", {"opacity": 6, "normal": 5}, shape=(20, 16))
    params = params_with(tmp_path, {"site_b": {"source": "folder", "path": str(site)}})
    data_cfg = external.external_cfg(params, "site_b")
    assert data_cfg.source == "folder" and data_cfg.seed == 0  # the rest from 'data'
    cfg = EvaluateParams(device="cpu", bootstrap=50, gradcam=0)
    summary = external.run("site_b", data_cfg, load_section(params, "prepare", stage="x"),
                           cfg, trained / "prepared", trained / "model.pt",
                           tmp_path / "work", tmp_path / "metrics")
    assert summary["n"] == 11
    assert summary["per_class"]["opacity"]["support"] == 6  # relabelled to the model's order
    ext_stats = store.read_stats(tmp_path / "work" / "prepared")
    assert ext_stats["image_size"] == 8 and ext_stats["classes"] == CLASSES
    internal = evaluate_stage.evaluate(cfg, trained / "model.pt", trained / "prepared",
                                       tmp_path / "i.json", tmp_path / "ip", tmp_path / "ir.md")
    assert summary["threshold"]["value"] == internal["threshold"]["value"]
    written = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert written["n"] == 11 and (tmp_path / "metrics" / "report.md").exists()
    assert json.loads((tmp_path / "metrics" / "prepare.json").read_text())["external"] == "site_b"


def test_a_class_the_model_does_not_know_is_named(trained: Path, tmp_path: Path) -> None:
    site = make_folder(tmp_path / "site_c", {"normal": 3, "effusion": 3})
    params = params_with(tmp_path, {"site_c": {"source": "folder", "path": str(site),
                                                "classes": None}})
    with pytest.raises(PipelineError, match=r"'external.site_c' has class 'effusion', which "
                                            r"the model does not know"):
        external.run("site_c", external.external_cfg(params, "site_c"),
                     load_section(params, "prepare", stage="x"), EvaluateParams(device="cpu"),
                     trained / "prepared", trained / "model.pt", tmp_path / "w",
                     tmp_path / "m")
    assert not (tmp_path / "w" / "prepared").exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize("sets, expected", [
    ({}, r"no external set 'site_b' \(section 'external' has none\)"),
    ({"site_b": {"source": "folder"}}, r"'external.site_b' must be a mapping with at least "
                                       r"'path'"),
    ({"site_b": {"path": "x", "sauce": "folder"}}, r"'external.site_b.sauce' is not a key of "
                                                   r"'data'"),
    ({"site_b": {"path": "x", "source": "ftp"}}, r"external.site_b: 'data.source'"),
])
def test_bad_external_params_are_one_line_errors(tmp_path: Path, sets: dict,
                                                 expected: str) -> None:
    with pytest.raises(PipelineError, match=expected):
        external.external_cfg(params_with(tmp_path, sets), "site_b")
