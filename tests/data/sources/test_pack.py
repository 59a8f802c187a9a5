"""What every file-based source shares (``pack.write``): the class order of
``data.classes``, and patient ids from file names (``data.patient_pattern``) or from the
DICOM files' Patient ID, kept together by the split and recorded in the prepare
metrics."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from imagefiles import data_cfg, dicom_bytes, make_folder, pixels, prepare_cfg, save

from medpipe import PipelineError
from medpipe.data import prepare
from medpipe.data.sources.registry import read
from stages.download import download
from stages.prepare import prepare as prepare_stage


def download_error(tmp_path, **changes) -> str:
    with pytest.raises(PipelineError) as info:
        download(data_cfg(**changes), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".tmp-*"))
    message = str(info.value)
    assert "\n" not in message and message.endswith("(stage download)")
    return message


# ---------------------------------------------------------------------------- class order


def test_classes_set_the_label_order_and_the_positive_class(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"abnormal": 6, "normal": 6})
    download(data_cfg(path=str(folder), classes=["normal", "abnormal"]), tmp_path / "raw")
    meta = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    assert meta["classes"] == ["normal", "abnormal"]
    assert meta["counts"] == {"normal": 6, "abnormal": 6}
    data = read(tmp_path / "raw")
    assert data.classes == ["normal", "abnormal"]
    assert [data.classes[k] for k in data.labels] == [i.split("/")[0] for i in data.ids]
    summary = prepare.prepare(data, tmp_path / "store", prepare_cfg())
    assert summary["classes"] == ["normal", "abnormal"]
    assert summary["positive_class"] == "abnormal"


def test_null_keeps_the_sorted_names(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"normal": 4, "abnormal": 4})
    download(data_cfg(path=str(folder), classes=None), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["abnormal", "normal"]
    summary = prepare.prepare(data, tmp_path / "store", prepare_cfg(val_fraction=0.25,
                                                                    test_fraction=0.25))
    assert summary["positive_class"] == "normal"


def test_an_unknown_class_lists_the_classes_found(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"normal": 3, "pneumonia": 3})
    message = download_error(tmp_path, path=str(folder), classes=["normal", "opacity"])
    assert message.startswith("params.yaml: 'data.classes' names 'opacity', which is not in "
                              "the data; classes found: 'normal', 'pneumonia'")
    assert "set 'data.classes' to null" in message


def test_a_class_left_out_is_named(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 3, "b": 3, "c": 3})
    message = download_error(tmp_path, path=str(folder), classes=["c", "a"])
    assert "'data.classes' leaves out class 'b'; classes found: 'a', 'b', 'c'" in message


def test_multi_label_findings_are_reordered(tmp_path) -> None:
    root = tmp_path / "cxr"
    rows = []
    for i, label in enumerate(["Mass|Effusion", "Effusion", "No Finding", "Mass"] * 3):
        save(root / "img" / f"{i}.png", pixels(i))
        rows.append({"path": f"img/{i}.png", "label": label})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    download(data_cfg(source="csv", name="labels.csv", path=str(root),
                      classes=["Mass", "Effusion"]), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["Mass", "Effusion"]
    assert data.labels[:4].tolist() == [[1, 1], [0, 1], [0, 0], [1, 0]]


# ------------------------------------------------------------------ patients from file names


def patient_folder(root, split: str | None = None):
    """Patients p00..p11, each with 2-4 images, in either class (a patient's studies
    may differ); the file names start with the patient's number."""
    rng = np.random.default_rng(0)
    k = 0
    for patient in range(12):
        for visit in range(int(rng.integers(2, 5))):
            cls = ("normal", "effusion")[(patient + visit) % 2]
            base = root / split if split else root
            save(base / cls / f"{patient:02d}_{visit}.png", pixels(k))
            k += 1
    return root


def test_pattern_groups_each_patient_into_one_split(tmp_path) -> None:
    download(data_cfg(path=str(patient_folder(tmp_path / "d")),
                      patient_pattern=r"^(\d+)_"), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert sorted(set(data.groups)) == [f"{p:02d}" for p in range(12)]
    prepare.prepare(data, tmp_path / "store", prepare_cfg(val_fraction=0.25,
                                                          test_fraction=0.25))
    manifest = pd.read_csv(tmp_path / "store" / "manifest.csv")
    patient = manifest["source_id"].str.extract(r"/(\d+)_")[0]
    splits_per_patient = manifest.groupby(patient)["split"].nunique()
    assert (splits_per_patient == 1).all() and set(manifest["split"]) == {"train", "val", "test"}


def test_a_file_name_without_a_match_is_named_with_the_pattern(tmp_path) -> None:
    root = patient_folder(tmp_path / "d")
    save(root / "normal" / "scan_x.png", pixels(99))
    message = download_error(tmp_path, path=str(root), patient_pattern=r"^(\d+)_")
    assert "normal/scan_x.png: file name does not match 'data.patient_pattern' '^(\\d+)_' " \
        "(its group must capture the patient id)" in message, message


def test_a_patient_in_two_official_splits_is_refused(tmp_path) -> None:
    root = patient_folder(tmp_path / "d", split="train")
    save(root / "test" / "normal" / "03_9.png", pixels(50))
    save(root / "test" / "effusion" / "20_0.png", pixels(51))
    message = download_error(tmp_path, path=str(root), patient_pattern=r"^(\d+)_")
    assert "patient '03' (from 'data.patient_pattern') has images in splits test, train" \
        in message


@pytest.mark.parametrize(("pattern", "problem"), [
    (r"^\d+_", "must have exactly one group"), (r"^(\d+)_(\d)", "must have exactly one group"),
    ("^(", "is not a regular expression")])
def test_the_pattern_needs_one_group(pattern, problem) -> None:
    with pytest.raises(PipelineError, match=re.escape(f"'data.patient_pattern' {problem}")):
        data_cfg(patient_pattern=pattern)


def test_pattern_and_a_patient_id_column_are_not_both_set(tmp_path) -> None:
    root = tmp_path / "cxr"
    for i in range(4):
        save(root / f"{i}_a.png", pixels(i))
    pd.DataFrame({"path": [f"{i}_a.png" for i in range(4)], "label": ["x", "y"] * 2,
                  "patient_id": ["p1", "p2"] * 2}).to_csv(root / "labels.csv", index=False)
    message = download_error(tmp_path, source="csv", name="labels.csv", path=str(root),
                             patient_pattern=r"^(\d+)_")
    assert "manifest has a patient_id column" in message


# ------------------------------------------------------------------ patients from DICOM files


def dicom_folder(root, patient_ids=None, names=None):
    """Patients 0..11 with 2-4 DICOM images each, in either class; the Patient ID of the
    image of ``patient`` is ``patient_ids(patient, visit)`` (default P<patient>), left out
    when that gives None; file names from ``names(patient, visit)`` (default a counter,
    no patient in it; every fourth file has no extension, DICOM by its content)."""
    rng = np.random.default_rng(0)
    k = 0
    for patient in range(12):
        for visit in range(int(rng.integers(2, 5))):
            cls = ("normal", "effusion")[(patient + visit) % 2]
            pid = patient_ids(patient, visit) if patient_ids else f"P{patient:02d}"
            name = names(patient, visit) if names else f"im{k:03d}" + (".dcm" if k % 4 else "")
            path = root / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            attrs = {} if pid is None else {"PatientID": pid}
            path.write_bytes(dicom_bytes(pixels(k), **attrs))
            k += 1
    return root


def prepared_patients(tmp_path, **changes) -> dict:
    """Download and prepare with ``changes`` to the data params; the prepare metrics'
    ``patients``, after checking that no patient has images in two splits."""
    download(data_cfg(**changes), tmp_path / "raw")
    summary = prepare_stage(prepare_cfg(val_fraction=0.25, test_fraction=0.25),
                            tmp_path / "raw", tmp_path / "store", tmp_path / "prepare.json")
    assert json.loads((tmp_path / "prepare_detail.json").read_text()) == summary
    index = pd.read_csv(tmp_path / "raw" / "index.csv", dtype=str)
    if "patient_id" in index:
        manifest = pd.read_csv(tmp_path / "store" / "manifest.csv")
        patient = manifest["source_id"].map(dict(zip(index["file"], index["patient_id"],
                                                     strict=True)))
        assert (manifest.groupby(patient)["split"].nunique() == 1).all()
    return summary["patients"]


def test_dicom_patient_ids_group_the_split(tmp_path) -> None:
    folder = dicom_folder(tmp_path / "d")
    assert prepared_patients(tmp_path, path=str(folder)) == {"count": 12,
                                                             "from": "dicom PatientID"}
    data = read(tmp_path / "raw")
    assert sorted(set(data.groups)) == [f"P{p:02d}" for p in range(12)]
    meta = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    assert meta["patients"] == 12 and meta["patients_from"] == "dicom PatientID"


def test_a_file_name_pattern_wins_over_dicom_patient_ids(tmp_path) -> None:
    folder = dicom_folder(tmp_path / "d", patient_ids=lambda p, v: "SAME",
                          names=lambda p, v: f"{p:02d}_{v}.dcm")
    assert prepared_patients(tmp_path, path=str(folder), patient_pattern=r"^(\d+)_") == {
        "count": 12, "from": "file-name pattern"}
    assert sorted(set(read(tmp_path / "raw").groups)) == [f"{p:02d}" for p in range(12)]


def test_a_manifest_column_wins_over_dicom_patient_ids(tmp_path) -> None:
    folder = dicom_folder(tmp_path / "d")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("im*"))
    pd.DataFrame({"path": files, "label": [f.split("/")[0] for f in files],
                  "patient_id": [f"M{i % 10}" for i in range(len(files))]}).to_csv(
        folder / "labels.csv", index=False)
    assert prepared_patients(tmp_path, source="csv", path=str(folder), name="labels.csv") == {
        "count": 10, "from": "manifest column"}


@pytest.mark.parametrize("case", ["one lacks it", "one id for all", "a png"])
def test_dicom_patient_ids_unused_unless_every_image_has_one(tmp_path, caplog, case) -> None:
    if case == "one lacks it":
        folder = dicom_folder(tmp_path / "d", patient_ids=lambda p, v: None if (p, v) == (
            3, 1) else f"P{p:02d}")
        said = "1 of 33 images have no DICOM Patient ID (first: normal/im011.dcm)"
    elif case == "one id for all":  # anonymised
        folder = dicom_folder(tmp_path / "d", patient_ids=lambda p, v: "ANONYMOUS")
        said = "every DICOM file has Patient ID 'ANONYMOUS' (an anonymised set?)"
    else:
        folder = dicom_folder(tmp_path / "d")
        save(folder / "normal" / "x.png", pixels(99))
        said = "1 of 34 images have no DICOM Patient ID (first: normal/x.png)"
    with caplog.at_level("WARNING"):
        assert prepared_patients(tmp_path, path=str(folder)) == {"count": None, "from": None}
    assert said in caplog.text
    assert read(tmp_path / "raw").groups is None


def test_images_without_dicom_have_no_patients(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 8, "b": 8})
    assert prepared_patients(tmp_path, path=str(folder)) == {"count": None, "from": None}
