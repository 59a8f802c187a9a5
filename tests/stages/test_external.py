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
from medpipe.data.sources import registry
from medpipe.params import external as external_params
from medpipe.params import loading
from medpipe.params.loading import load_section
from medpipe.params.sections import EvaluateParams, PrepareParams
from stages import evaluate as evaluate_stage
from stages import external
from stages.download import download

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
    written = json.loads((tmp_path / "metrics" / "evaluate_detail.json").read_text())
    assert written["n"] == 11 and (tmp_path / "metrics" / "report.md").exists()
    headline = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert headline["threshold"] == written["threshold"]["value"]
    prepared = json.loads((tmp_path / "metrics" / "prepare_detail.json").read_text())
    assert prepared["external"] == "site_b"
    assert json.loads((tmp_path / "metrics" / "prepare.json").read_text())["test_images"] == 11


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


def test_a_folder_set_beside_a_csv_manifest_takes_only_the_keys_a_folder_reads(
        tmp_path: Path) -> None:
    """The csv manifest's file name, the training archive's url and checksum and the
    pattern of its file names stay with the data section; the label order carries over."""
    site = make_folder(tmp_path / "site_b", {"opacity": 3, "normal": 3}, shape=(20, 16))
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["data"].update(source="csv", name="manifest.csv", patient_pattern=r"^(\d+)_",
                       classes=CLASSES,
                       url="https://example.org/train.zip", sha256="ab" * 32)
    doc["external"] = {"site_b": {"source": "folder", "path": str(site)}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = external.external_cfg(params, "site_b")
    assert (cfg.name, cfg.url, cfg.sha256) == (None, None, None)
    assert cfg.classes == CLASSES and cfg.patient_pattern is None
    download(cfg, tmp_path / "raw")  # the folder source accepts what it inherited
    assert registry.read(tmp_path / "raw").classes == CLASSES


@pytest.mark.parametrize("data, entry, expected", [
    # the same source: what it reads carries over, the dataset's own file does not
    ({"source": "medmnist", "name": "pneumoniamnist", "resolution": 64, "md5": "x",
      "url": "u"}, {"path": "p"}, {"name": "pneumoniamnist", "resolution": 64, "md5": None,
                                   "url": None}),
    ({"source": "synthetic", "seed": 3, "n_per_class": 7}, {"path": "p", "seed": 4},
     {"seed": 4, "n_per_class": 7}),
    # another source: only the keys every source reads alike
    ({"source": "synthetic", "resolution": 100}, {"path": "p", "source": "medmnist",
                                                  "name": "breastmnist"},
     {"resolution": 128, "name": "breastmnist"}),
    ({"source": "csv", "name": "labels.csv", "patient_pattern": "(.)"},
     {"path": "p", "source": "medmnist"}, {"name": None, "patient_pattern": None}),
    ({"source": "folder", "class_folders": {"a_1": "a"}}, {"path": "p"},
     {"class_folders": None}),
])
def test_a_set_inherits_only_the_keys_that_apply_to_its_source(
        data: dict, entry: dict, expected: dict) -> None:
    defaults = loading.defaults("data")
    values = external_params.entry_values({**defaults, **data}, entry, defaults)
    assert {k: values[k] for k in expected} == expected


@pytest.mark.parametrize("name", ["site b", "site/b", "../escape", "site.b", "-b", "", 7])
def test_a_set_name_that_is_not_one_safe_word_is_refused_before_any_stage_runs(
        tmp_path: Path, name) -> None:
    params = params_with(tmp_path, {name: {"source": "folder", "path": "x"}})
    for section, stage in (("data", "download"), ("evaluate", "evaluate")):
        with pytest.raises(PipelineError) as info:
            load_section(params, section, stage=stage)
        message = str(info.value)
        assert "\n" not in message and f"external set name {name!r} must be" in message
        assert f"checked by stage {stage}" in message
    with pytest.raises(PipelineError, match="must be letters, digits"):
        external.external_cfg(params, str(name))


def test_a_bad_set_stops_the_download_stage_with_one_line(tmp_path: Path) -> None:
    """A set's mistake surfaces when the pipeline's first stage loads params.yaml, not
    after download, prepare and train have run."""
    params = params_with(tmp_path, {"site_b": {"path": "x", "source": "ftp"}})
    with pytest.raises(PipelineError, match=r"external.site_b: 'data.source' must be one of .* "
                                            r"\(stage external, checked by stage download\)"):
        load_section(params, "data", stage="download")
