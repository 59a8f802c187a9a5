"""The csv source: a manifest of paths and labels, optional patient ids and split; the
patient-grouped split, multi-label findings, and the manifest's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from imagefiles import data_cfg, pixels, prepare_cfg, save

from medpipe import PipelineError
from medpipe.data import prepare, store
from medpipe.data.sources.registry import read
from stages.download import download


def make_dataset(root: Path, rows: list[dict], manifest: str = "labels.csv") -> Path:
    """Write one small PNG per row (under root/images) and the manifest."""
    for i, row in enumerate(rows):
        save(root / "images" / Path(row["path"]).name, pixels(i, (10, 10)))
    table = pd.DataFrame(rows)
    (root / manifest).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / manifest, index=False)
    return root


def csv_cfg(root: Path, **changes):
    return data_cfg(**{"source": "csv", "name": "labels.csv", "path": str(root), **changes})


def test_manifest_with_patients_gives_a_grouped_split(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for p in range(60):  # 60 patients with 1-4 images each; a patient's label is fixed
        label = "pneumonia" if p % 3 == 0 else "normal"
        for k in range(int(rng.integers(1, 5))):
            rows.append({"path": f"images/p{p:02d}_{k}.png", "label": label,
                         "patient_id": f"P{p:02d}", "age": 50})
    root = make_dataset(tmp_path / "d", rows)
    download(csv_cfg(root), tmp_path / "raw")
    meta = json.loads((tmp_path / "raw/dataset.json").read_text())
    assert meta["source"] == "csv" and meta["patients"] == 60
    assert meta["classes"] == ["normal", "pneumonia"]
    data = read(tmp_path / "raw")
    assert data.groups is not None and len(data.ids) == len(rows)
    prepare.prepare(data, tmp_path / "store", prepare_cfg(val_fraction=0.2,
                                                              test_fraction=0.2))
    manifest = pd.read_csv(tmp_path / "store" / store.MANIFEST)
    patient = dict(zip(data.ids, data.groups, strict=True))
    manifest["patient"] = manifest["source_id"].map(patient)
    assert manifest.groupby("patient")["split"].nunique().max() == 1  # no patient in two
    share = manifest.groupby("split")["patient"].nunique() / 60
    assert 0.1 <= share["test"] <= 0.3 and 0.1 <= share["val"] <= 0.3
    assert set(manifest.loc[manifest["split"] == "test", "class"]) == {"normal", "pneumonia"}


def test_without_patient_ids_images_are_split_freely(tmp_path) -> None:
    # The same 30 images, grouped by patient or not: only the grouped split keeps the
    # two images of each patient together (that the check can fail at all).
    rows = [{"path": f"images/{i:02d}.png", "label": "ab"[i % 2], "patient_id": f"P{i // 2}"}
            for i in range(60)]
    root = make_dataset(tmp_path / "d", rows)
    (root / "nopatient.csv").write_text(pd.DataFrame(rows).drop(columns="patient_id")
                                        .to_csv(index=False))
    download(csv_cfg(root, name="nopatient.csv"), tmp_path / "raw")
    prepare.prepare(read(tmp_path / "raw"), tmp_path / "store", prepare_cfg())
    manifest = pd.read_csv(tmp_path / "store" / store.MANIFEST)
    manifest["patient"] = manifest["source_id"].str[7:9].astype(int) // 2
    assert manifest.groupby("patient")["split"].nunique().max() == 2


def test_official_split_column_and_leaky_patients(tmp_path) -> None:
    rows = [{"path": f"images/{i}.png", "label": "ab"[i % 2], "split": "train"}
            for i in range(8)]
    rows += [{"path": f"images/t{i}.png", "label": "ab"[i % 2], "split": "test"}
             for i in range(4)]
    root = make_dataset(tmp_path / "d", rows)
    download(csv_cfg(root), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert (data.splits == "test").sum() == 4
    rows[0]["patient_id"] = "P1"
    rows[-1]["patient_id"] = "P1"
    for i, row in enumerate(rows):
        row.setdefault("patient_id", f"X{i}")
    make_dataset(root, rows)
    with pytest.raises(PipelineError, match="patient 'P1' has images in splits test, train; "
                                            "a patient's images must all be in one split"):
        download(csv_cfg(root), tmp_path / "raw2")


def test_multi_label_findings(tmp_path) -> None:
    labels = ["Effusion|Mass", "No Finding", "Mass", "", "Atelectasis|Effusion", "Effusion"]
    rows = [{"path": f"images/{i}.png", "label": v} for i, v in enumerate(labels)]
    root = make_dataset(tmp_path / "d", rows)
    download(csv_cfg(root), tmp_path / "raw")
    meta = json.loads((tmp_path / "raw/dataset.json").read_text())
    assert meta["task"] == "multilabel"
    assert meta["classes"] == ["Atelectasis", "Effusion", "Mass"]
    assert meta["counts"] == {"Atelectasis": 1, "Effusion": 3, "Mass": 2}
    data = read(tmp_path / "raw")
    assert data.multilabel and data.labels.dtype == np.uint8
    assert data.labels.tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 1, 0],
                                    [0, 1, 0]]


def errors_of(tmp_path, root, **changes) -> str:
    with pytest.raises(PipelineError) as info:
        download(csv_cfg(root, **changes), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".tmp-*"))
    message = str(info.value)
    assert "\n" not in message and message.endswith("(stage download)")
    return message


def test_missing_column(tmp_path) -> None:
    root = make_dataset(tmp_path / "d", [{"path": "images/0.png", "diagnosis": "a"}])
    assert errors_of(tmp_path, root) == (
        f"{root / 'labels.csv'}: missing column 'label' (columns: path, diagnosis); needed: "
        f"path, label; optional: patient_id, split (stage download)")


def test_paths_that_do_not_exist(tmp_path) -> None:
    rows = [{"path": f"images/{i}.png", "label": "ab"[i % 2]} for i in range(4)]
    root = make_dataset(tmp_path / "d", rows)
    (root / "images/2.png").unlink()
    (root / "images/3.png").unlink()
    assert errors_of(tmp_path, root) == (
        f"{root / 'labels.csv'}: 2 of 4 image paths do not exist, first at row 4: "
        f"images/2.png (stage download)")


@pytest.mark.parametrize(("row", "expected"), [
    ({"path": "../outside.png", "label": "a"},
     "row 2: path '../outside.png' leads outside the dataset folder"),
    ({"path": "/abs/x.png", "label": "a"}, "row 2: path '/abs/x.png' is absolute"),
    ({"path": "images/x.gif", "label": "a"}, "row 2: images/x.gif: unsupported file type"),
    ({"path": "images/0.png", "label": "a", "split": "holdout"},
     "row 2: split 'holdout' is not one of train, val, test"),
    ({"path": "images/0.png", "label": ""}, "row 2: empty label"),
])
def test_bad_rows(tmp_path, row, expected) -> None:
    rows = [row, {"path": "images/1.png", "label": "b", **(
        {"split": "train"} if "split" in row else {})}]
    root = make_dataset(tmp_path / "d", rows)
    assert expected in errors_of(tmp_path, root)


def test_duplicate_row_and_missing_manifest(tmp_path) -> None:
    root = make_dataset(tmp_path / "d", [{"path": "images/0.png", "label": "a"},
                                         {"path": "images/1.png", "label": "b"},
                                         {"path": "./images/0.png", "label": "b"}])
    assert "row 4: image './images/0.png' is listed twice" in errors_of(tmp_path, root)
    assert errors_of(tmp_path, root, name="other.csv") == (
        f"{root / 'other.csv'}: manifest not found (stage download)")
    assert "'data.name' must name the manifest" in errors_of(tmp_path, root, name=None)


def test_rows_naming_links_out_of_the_dataset_folder_are_refused(tmp_path) -> None:
    # The path stays inside as text, but the file is a link whose bytes would be packed.
    secret = save(tmp_path / "elsewhere" / "secret.png", pixels(9))
    rows = [{"path": f"images/{i}.png", "label": "ab"[i % 2]} for i in range(4)]
    root = make_dataset(tmp_path / "d", rows)
    (root / "images" / "3.png").unlink()
    (root / "images" / "3.png").symlink_to(secret)
    assert errors_of(tmp_path, root) == (
        f"{root / 'labels.csv'}: row 5: path 'images/3.png': a symbolic link to {secret}, "
        f"outside the dataset folder {root}; refused (stage download)")
    (root / "images" / "3.png").unlink()
    (root / "images").rename(tmp_path / "elsewhere" / "images")
    (root / "images").symlink_to(tmp_path / "elsewhere" / "images")
    assert "row 2: path 'images/0.png': a symbolic link to " in errors_of(tmp_path, root)
    (root / "labels.csv").rename(tmp_path / "elsewhere" / "labels.csv")
    (root / "labels.csv").symlink_to(tmp_path / "elsewhere" / "labels.csv")
    assert errors_of(tmp_path, root).startswith(
        f"{root / 'labels.csv'}: a symbolic link to {tmp_path / 'elsewhere' / 'labels.csv'}")


def test_links_inside_the_dataset_folder_are_read(tmp_path) -> None:
    rows = [{"path": f"images/{i}.png", "label": "ab"[i % 2]} for i in range(4)]
    root = make_dataset(tmp_path / "d", rows)
    (root / "images" / "3.png").unlink()
    (root / "images" / "3.png").symlink_to(Path("1.png"))
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    download(csv_cfg(tmp_path / "alias"), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.images.read_bytes(3) == (root / "images" / "1.png").read_bytes()


def test_other_columns_are_carried_into_the_store_manifest(tmp_path) -> None:
    rows = [{"path": f"images/{i:02d}.png", "label": "ab"[i % 2], "site": f"s{i % 3}",
             "sex": "" if i == 5 else "FM"[i % 2]} for i in range(60)]
    root = make_dataset(tmp_path / "d", rows)
    download(csv_cfg(root), tmp_path / "raw")
    prepare.prepare(read(tmp_path / "raw"), tmp_path / "store", prepare_cfg())
    manifest = pd.read_csv(tmp_path / "store" / store.MANIFEST, keep_default_na=False,
                           dtype=str)
    assert list(manifest.columns)[-2:] == ["site", "sex"]
    by_id = {f"images/{r['path'].split('/')[-1]}": r for r in rows}
    for _, row in manifest.iterrows():  # every image keeps its own values, in every split
        assert row["site"] == by_id[row["source_id"]]["site"]
        assert row["sex"] == by_id[row["source_id"]]["sex"]


def test_a_column_named_like_the_store_s_own_is_refused(tmp_path) -> None:
    rows = [{"path": f"images/{i}.png", "label": "ab"[i % 2], "class": "x"} for i in range(8)]
    root = make_dataset(tmp_path / "d", rows)
    with pytest.raises(PipelineError, match=r"labels.csv: column 'class' is a name the "
                                            r"pipeline uses itself"):
        download(csv_cfg(root), tmp_path / "raw")
