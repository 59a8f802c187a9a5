"""The medmnist source: params checks, the subset table, and a real download of the
official PneumoniaMNIST file from a local HTTP server, then the whole pipeline under DVC."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import edit_params, make_project, sh, stages_run
from imagefiles import prepare_cfg
from localhttp import local_server

from medpipe import PipelineError
from medpipe.data import prepare
from medpipe.data.sources import medmnist
from medpipe.data.sources.registry import read
from medpipe.params.loading import parse_section
from medpipe.utils import cli
from stages.download import download, get_args_parser, main

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "medmnist"
PNEUMONIA = SHARED / "pneumoniamnist.npz"
PNEUMONIA_MD5 = "28209eda62fecd6e6a2d98b1501bb15f"  # medmnist info.py and the shared README

needs_shared = pytest.mark.skipif(
    not PNEUMONIA.is_file(),
    reason=f"official MedMNIST file not available at {PNEUMONIA} (shared data not mounted)",
)


def data_cfg(**changes):
    values = {"source": "medmnist", "name": "pneumoniamnist", "url": None, "md5": None,
              "sha256": None, "path": "data/external", "seed": 0, "resolution": 28,
              "n_per_class": 10, "classes": None, "class_folders": None,
              "patient_pattern": None}
    values.update(changes)
    return parse_section("data", values, stage="download")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Partial downloads go to the test's own directory, not the user's cache."""
    path = tmp_path / "download-cache"
    monkeypatch.setenv("MEDPIPE_DOWNLOAD_CACHE", str(path))
    return path


# ------------------------------------------------------------------------- params and table


def test_table_has_every_2d_subset_and_size() -> None:
    assert list(medmnist.SUBSETS) == [
        "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
        "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist",
        "organsmnist"]
    digests = []
    for name, info in medmnist.SUBSETS.items():
        assert sorted(info.md5) == [28, 64, 128, 224], name
        assert all(re.fullmatch(r"[0-9a-f]{32}", d) for d in info.md5.values()), name
        digests += info.md5.values()
        assert len(info.classes) >= 2 and info.channels in (1, 3)
    assert len(set(digests)) == len(digests)  # no value pasted twice
    assert medmnist.SUBSETS["pneumoniamnist"].md5[28] == PNEUMONIA_MD5
    assert medmnist.SUBSETS["breastmnist"].md5[28] == "750601b1f35ba3300ea97c75c52ff8f6"


def test_official_urls() -> None:
    assert medmnist.official_url("pneumoniamnist", 28) == (
        "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1")
    assert medmnist.official_url("pathmnist", 224) == (
        "https://zenodo.org/records/10519652/files/pathmnist_224.npz?download=1")
    info, url, md5 = medmnist.resolve(data_cfg(name="dermamnist", resolution=64))
    assert url.endswith("/dermamnist_64.npz?download=1") and md5 == info.md5[64]


def test_unknown_name_lists_the_valid_ones(tmp_path) -> None:
    with pytest.raises(PipelineError) as info:
        medmnist.fetch(data_cfg(name="pneumoniamnst"), tmp_path / "raw")
    message = str(info.value)
    assert "'data.name: pneumoniamnst'" in message and "(stage download)" in message
    for name in medmnist.SUBSETS:
        assert name in message
    assert not (tmp_path / "raw").exists()


def test_missing_name_is_refused() -> None:
    with pytest.raises(PipelineError, match="'data.name' must name a MedMNIST subset"):
        medmnist.resolve(data_cfg(name=None))


def test_unsupported_resolution_lists_the_valid_ones() -> None:
    valid = r"'data.resolution' must be one of 28, 64, 128, 224 .* 32"
    with pytest.raises(PipelineError, match=valid):
        medmnist.resolve(data_cfg(resolution=32))


def test_chestmnist_is_multi_label(tmp_path, cache) -> None:
    """A ChestMNIST-shaped file (14 findings per image) is read as multi-hot labels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 14)) < 0.3).astype(np.uint8)
    path = tmp_path / "chestmnist.npz"
    np.savez_compressed(path, **arrays)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    download(data_cfg(name="chestmnist", url=path.as_uri(), md5=md5), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.multilabel and data.labels.dtype == np.uint8
    assert data.labels.shape == (50, 14) and data.classes[0] == "atelectasis"
    assert np.array_equal(data.labels[data.splits == "test"], arrays["test_labels"])
    # A file whose labels are not 0/1 is refused.
    arrays["val_labels"][0, 0] = 2
    np.savez_compressed(path, **arrays)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(PipelineError, match="'val_labels' has values other than 0 and 1"):
        download(data_cfg(name="chestmnist", url=path.as_uri(), md5=md5), tmp_path / "raw2")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("md5", "abc", "'data.md5' must be 32 hex digits"),
    ("url", "ftp://mirror/x.npz", "'data.url' 'ftp://mirror/x.npz' must be an http://"),
])
def test_bad_url_or_md5_is_refused(key: str, value: str, expected: str) -> None:
    with pytest.raises(PipelineError, match=re.escape(expected)):
        medmnist.resolve(data_cfg(**{key: value}))


def test_md5_override_wins_and_is_normalised() -> None:
    _, _, md5 = medmnist.resolve(data_cfg(md5="AB" * 16))
    assert md5 == "ab" * 16


def test_synthetic_source_refuses_medmnist_keys(tmp_path) -> None:
    cfg = data_cfg(source="synthetic", name="pneumoniamnist")
    with pytest.raises(PipelineError, match="'data.name' is not read by source synthetic"):
        download(cfg, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------- class order and channels


def fake_file(tmp_path: Path, name: str, shape: tuple[int, ...], classes: int,
              multilabel: bool = False) -> tuple[str, str]:
    """A file shaped like subset ``name`` (images ``shape`` each, labels of ``classes``):
    its file:// URL and MD5."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = ((rng.random((n, classes)) < 0.4).astype(np.uint8)
                                     if multilabel else (np.arange(n) % classes)[:, None])
    path = tmp_path / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    return path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest()


def test_classes_reorder_the_official_labels(tmp_path, cache) -> None:
    """BreastMNIST's label 1 is 'normal, benign': data.classes can make malignant the
    positive class."""
    url, md5 = fake_file(tmp_path, "breastmnist", (28, 28), 2)
    official = read_subset(tmp_path / "official", "breastmnist", url, md5, None)
    assert official.classes == ["malignant", "normal, benign"]
    mine = read_subset(tmp_path / "mine", "breastmnist", url, md5, ["normal, benign", "malignant"])
    assert mine.classes == ["normal, benign", "malignant"]
    assert np.array_equal(mine.labels, 1 - official.labels)
    meta = json.loads((tmp_path / "mine" / "dataset.json").read_text())
    assert meta["official_classes"] == ["malignant", "normal, benign"]
    assert "official_classes" not in json.loads((tmp_path / "official" /
                                                 "dataset.json").read_text())


def test_findings_of_chestmnist_are_reordered(tmp_path, cache) -> None:
    url, md5 = fake_file(tmp_path, "chestmnist", (28, 28), 14, multilabel=True)
    official = read_subset(tmp_path / "official", "chestmnist", url, md5, None)
    order = official.classes[::-1]
    mine = read_subset(tmp_path / "mine", "chestmnist", url, md5, order)
    assert mine.classes == order and np.array_equal(mine.labels, official.labels[:, ::-1])


def test_a_class_not_in_the_subset_is_refused_before_the_download(tmp_path, cache) -> None:
    cfg = data_cfg(url=(tmp_path / "absent.npz").as_uri(), classes=["normal", "opacity"])
    with pytest.raises(PipelineError) as info:
        download(cfg, tmp_path / "raw")
    assert str(info.value).startswith("params.yaml: 'data.classes' names 'opacity', which is "
                                      "not in the data; classes found: 'normal', 'pneumonia'")
    assert not (tmp_path / "raw").exists()


def test_the_table_knows_the_colour_subsets_and_prepare_keeps_their_colour(tmp_path,
                                                                            cache) -> None:
    colour = {name for name, info in medmnist.SUBSETS.items() if info.channels == 3}
    assert colour == {"pathmnist", "dermamnist", "retinamnist", "bloodmnist"}
    url, md5 = fake_file(tmp_path, "dermamnist", (28, 28, 3), 7)
    data = read_subset(tmp_path / "raw", "dermamnist", url, md5, None)
    assert data.channels == 3
    stats = prepare.prepare(data, tmp_path / "store", prepare_cfg(channels="auto", seed=0))
    assert stats["channels"] == 3


def read_subset(raw: Path, name: str, url: str, md5: str, classes):
    download(data_cfg(name=name, url=url, md5=md5, classes=classes), raw)
    return read(raw)


def test_synthetic_source_refuses_a_patient_pattern(tmp_path) -> None:
    cfg = data_cfg(source="synthetic", name=None, patient_pattern=r"^(\d+)")
    with pytest.raises(PipelineError, match="'data.patient_pattern' is not read by source "
                                            "synthetic"):
        download(cfg, tmp_path / "raw2")


def test_class_folders_is_not_read_by_medmnist(tmp_path) -> None:
    with pytest.raises(PipelineError, match="'data.class_folders' is not read by source "
                                            "medmnist"):
        download(data_cfg(class_folders={"a": "b"}), tmp_path / "raw")


# --------------------------------------------------------------- download and read, for real


@needs_shared
def test_download_from_local_server_keeps_official_splits(tmp_path, cache) -> None:
    with local_server() as server:
        url = server.serve("/mirror/pneumoniamnist.npz", PNEUMONIA.read_bytes())
        download(data_cfg(url=url), tmp_path / "raw")
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["dataset.json", "pneumoniamnist.npz"]
    assert hashlib.md5((raw / "pneumoniamnist.npz").read_bytes()).hexdigest() == PNEUMONIA_MD5
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["source"] == "medmnist" and meta["name"] == "pneumoniamnist"
    assert meta["classes"] == ["normal", "pneumonia"] and meta["task"] == "binary-class"
    assert meta["counts"] == {"train": 4708, "val": 524, "test": 624}
    assert meta["md5"] == PNEUMONIA_MD5 and "url" not in meta  # a mirror is the same data
    assert list(cache.glob("*.part")) == []

    data = read(raw)
    assert data.classes == ["normal", "pneumonia"]
    assert data.images.shape == (5856, 28, 28) and data.images.dtype == np.uint8
    assert {s: int((data.splits == s).sum()) for s in ("train", "val", "test")} == {
        "train": 4708, "val": 524, "test": 624}
    with np.load(PNEUMONIA) as f:  # the test split is the official one, in order
        assert np.array_equal(data.images[data.splits == "test"], f["test_images"])
        assert np.array_equal(data.labels[data.splits == "test"], f["test_labels"].ravel())
    assert data.ids[0] == "pneumoniamnist-train-000000"
    with np.load(PNEUMONIA) as f:  # indexing across splits, as one concatenated array would
        whole = np.concatenate([f["train_images"], f["val_images"], f["test_images"]])
    for index in ([5855, 0, 4708, 4707, 5232], slice(4700, 4720), 5000, np.arange(0, 5856, 7)):
        assert np.array_equal(data.images[index], whole[index]), index
    assert len(data.images) == 5856
    assert set(np.unique(data.labels)) == {0, 1}


@needs_shared
def test_file_url_mirror_works(tmp_path, cache) -> None:
    download(data_cfg(url=PNEUMONIA.as_uri()), tmp_path / "raw")
    assert json.loads((tmp_path / "raw/dataset.json").read_text())["counts"]["test"] == 624


@needs_shared
def test_wrong_md5_leaves_no_output(tmp_path, cache) -> None:
    with pytest.raises(PipelineError) as info:
        download(data_cfg(url=PNEUMONIA.as_uri(), md5="0" * 32), tmp_path / "raw")
    message = str(info.value)
    assert PNEUMONIA.as_uri() in message and f"got {PNEUMONIA_MD5}" in message
    assert not (tmp_path / "raw").exists()
    assert not list(tmp_path.glob(".tmp-*")) and not list(cache.glob("*.part"))


@needs_shared
def test_file_of_another_subset_is_refused(tmp_path, cache) -> None:
    """A mirror mix-up with a matching user-supplied MD5 still fails on the contents."""
    cfg = data_cfg(name="pathmnist", url=PNEUMONIA.as_uri(), md5=PNEUMONIA_MD5)
    with pytest.raises(PipelineError, match=r"'train_images' has shape \(28, 28\) uint8"):
        download(cfg, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_http_404_from_mirror_names_url(tmp_path, cache) -> None:
    with local_server() as server, pytest.raises(PipelineError) as info:
        download(data_cfg(url=server.url("/nothing.npz")), tmp_path / "raw")
    assert str(info.value) == (
        f"{server.url('/nothing.npz')}: HTTP 404 Not Found (stage download)")
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------- end to end, DVC


@pytest.mark.slow
@needs_shared
def test_pipeline_on_pneumoniamnist_from_a_local_mirror(tmp_path) -> None:
    repo = make_project(tmp_path / "project")
    with local_server() as server:
        url = server.serve("/pneumoniamnist.npz", PNEUMONIA.read_bytes(), cut_after=1_000_000)
        edit_params(repo, data={"source": "medmnist", "name": "pneumoniamnist", "url": url,
                                "resolution": 28, "classes": None},
                    prepare={"image_size": 28}, train={"epochs": 1, "batch_size": 64})
        out = sh("dvc", "repro", cwd=repo).stdout
        assert [r.range for r in server.requests] == [None, "bytes=1000000-"]
    assert stages_run(out) == ["download", "plan", "prepare", "pretrained", "train",
                                 "crossval", "evaluate"]
    report = json.loads((repo / "metrics/evaluate_detail.json").read_text())
    assert report["n"] == 624 and set(report["per_class"]) == {"normal", "pneumonia"}
    prepared = json.loads((repo / "metrics/prepare_detail.json").read_text())
    assert {s: sum(c.values()) for s, c in prepared["counts"].items()} == {
        "train": 4708, "val": 524, "test": 624}
    # The partial download lived in .dvc/tmp, not in the output, and is gone once complete.
    assert (repo / ".dvc/tmp/downloads").is_dir()
    assert list((repo / ".dvc/tmp/downloads").glob("*.part")) == []
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo).stdout
    # Another mirror of the same bytes: download reruns, and nothing after it.
    edit_params(repo, data={"url": PNEUMONIA.as_uri()})
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == ["download"]


def test_stage_shell_prints_one_error_line_and_exits_1(tmp_path, cache, capsys) -> None:
    params = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with local_server() as server:
        params["data"].update(source="medmnist", name="breastmnist", resolution=28,
                              url=server.url("/breastmnist.npz"), classes=None)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            with pytest.raises(SystemExit) as info:
                cli.run("download", main, get_args_parser(),
                        ["--params", str(tmp_path / "params.yaml"),
                         "--out", str(tmp_path / "raw")])
        finally:  # cli.run configures the root logger: undo it
            for handler in root.handlers[len(handlers):]:
                root.removeHandler(handler)
            root.setLevel(level)
            logging.captureWarnings(False)
    assert info.value.code == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: {server.url('/breastmnist.npz')}: HTTP 404 Not Found "
                      "(stage download)"]
    assert not (tmp_path / "raw").exists()
