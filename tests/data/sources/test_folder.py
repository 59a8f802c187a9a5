"""The folder source: ImageFolder layouts with or without an official split, packed into
a three-file raw directory; and its one-line errors, which leave no output."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from imagefiles import data_cfg, dicom_bytes, make_folder, pixels, prepare_cfg, save

from medpipe import PipelineError
from medpipe.data import prepare
from medpipe.data.sources.registry import read
from stages.download import download


def test_class_folders_are_packed_into_three_files(tmp_path) -> None:
    folder = make_folder(tmp_path / "images", {"normal": 5, "effusion": 4})
    save(folder / "normal" / "sub" / "deep.tif", pixels(9, dtype=np.uint16))
    (folder / "normal" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    (folder / "README.txt").write_text("beside the class folders: ignored")
    download(data_cfg(path=str(folder)), tmp_path / "raw")
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["dataset.json", "images.zip", "index.csv"]
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["source"] == "folder" and meta["task"] == "multiclass"
    assert meta["classes"] == ["effusion", "normal"]  # sorted folder names
    assert meta["counts"] == {"effusion": 4, "normal": 6} and meta["splits"] is None
    with zipfile.ZipFile(raw / "images.zip") as zf:  # stored byte for byte, not compressed
        info = zf.getinfo("normal/sub/deep.tif")
        assert info.compress_type == zipfile.ZIP_STORED
        assert zf.read(info) == (folder / "normal/sub/deep.tif").read_bytes()
    data = read(raw)
    assert data.ids[:2] == ["effusion/000.png", "effusion/001.png"]
    assert data.labels.tolist() == [0] * 4 + [1] * 6 and data.splits is None
    assert np.array_equal(data.images.decode(data.ids.index("normal/sub/deep.tif")),
                          pixels(9, dtype=np.uint16))


def test_official_split_is_kept_and_val_carved_from_train(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 8, "b": 8}, split="train")
    make_folder(folder, {"a": 3, "b": 3}, split="test", seed=1)
    download(data_cfg(path=str(folder)), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert sorted(set(data.splits)) == ["test", "train"]
    stats = prepare.prepare(data, tmp_path / "store", prepare_cfg(val_fraction=0.25))
    assert stats["images"] == {"train": 12, "val": 4, "test": 6}
    assert stats["counts"]["val"] == {"a": 2, "b": 2}
    test_ids = [i for i, s in zip(data.ids, data.splits, strict=True) if s == "test"]
    assert all(i.startswith("test/") for i in test_ids) and len(test_ids) == 6


def test_wrapping_folder_is_descended(tmp_path) -> None:
    make_folder(tmp_path / "outer" / "chest_xray", {"NORMAL": 2, "PNEUMONIA": 2})
    download(data_cfg(path=str(tmp_path / "outer")), tmp_path / "raw")
    assert read(tmp_path / "raw").classes == ["NORMAL", "PNEUMONIA"]


def test_dicom_files_in_a_folder(tmp_path) -> None:
    for k, cls in enumerate(("a", "b")):
        for i in range(4):
            arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * (i + 1 + 4 * k))
            path = tmp_path / "d" / cls / f"{i}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dicom_bytes(arr, WindowCenter=100, WindowWidth=200))
    download(data_cfg(path=str(tmp_path / "d")), tmp_path / "raw")
    data = read(tmp_path / "raw")
    stats = prepare.prepare(data, tmp_path / "store", prepare_cfg())
    assert stats["images"] == {"train": 4, "val": 2, "test": 2}


def errors_of(tmp_path, folder, **changes) -> str:
    with pytest.raises(PipelineError) as info:
        download(data_cfg(path=str(folder), **changes), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".tmp-*"))
    message = str(info.value)
    assert "\n" not in message and message.endswith("(stage download)")
    return message


def test_empty_class_folder(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (folder / "c").mkdir()
    assert errors_of(tmp_path, folder) == (
        f"{folder / 'c'}: class folder with no images (stage download)")


def test_class_in_one_split_only(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2}, split="train")
    make_folder(folder, {"a": 2, "b": 2}, split="val")
    make_folder(folder, {"a": 2, "b": 2, "c": 2}, split="test")
    assert errors_of(tmp_path, folder) == (
        f"{folder}: class 'c' has a folder in test but not in train, val; every class "
        f"needs images in every split (stage download)")


def test_unsupported_file_type_says_which(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (folder / "b" / "scan.gif").write_bytes(b"GIF89a")
    message = errors_of(tmp_path, folder)
    assert message.startswith(f"{folder / 'b' / 'scan.gif'}: unsupported file type '.gif'; "
                              f"supported: .png, .jpg, .jpeg, .bmp, .tif, .tiff, .dcm")


def test_train_without_test(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 1, "b": 1}, split="train")
    assert errors_of(tmp_path, folder) == (
        f"{folder}: split folders train: train/ and test/ are needed (val/ is optional) "
        f"(stage download)")


def test_a_single_class(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2})
    (folder / "notes.md").write_text("a file beside the class folder")
    assert errors_of(tmp_path, folder) == (
        f"{folder}: 1 class folder found (a); at least 2 class folders are needed, one per "
        f"class (stage download)")


def test_mixed_layout(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 1, "b": 1}, split="train")
    make_folder(folder, {"c": 1})
    assert "mixes split folders (train) with other folders (c)" in errors_of(tmp_path, folder)


def test_missing_path_and_stray_keys(tmp_path) -> None:
    assert errors_of(tmp_path, tmp_path / "nope") == (
        f"params.yaml: 'data.path' {tmp_path / 'nope'} does not exist (stage download)")
    folder = make_folder(tmp_path / "d", {"a": 1, "b": 1})
    assert re.search("'data.name' is not read by source folder",
                     errors_of(tmp_path, folder, name="x.csv"))


def test_links_out_of_the_dataset_folder_are_refused(tmp_path) -> None:
    # Whatever a link points at would be packed into data/raw and pushed with it.
    secret = tmp_path / "elsewhere" / "secret.png"
    save(secret, pixels(7))
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (folder / "b" / "passwd.png").symlink_to(secret)
    assert errors_of(tmp_path, folder) == (
        f"{folder / 'b' / 'passwd.png'}: a symbolic link to {secret}, outside the dataset "
        f"folder {folder}; refused (stage download)")
    (folder / "b" / "passwd.png").unlink()
    (folder / "b" / "more").symlink_to(secret.parent, target_is_directory=True)
    assert errors_of(tmp_path, folder) == (
        f"{folder / 'b' / 'more'}: a symbolic link to {secret.parent}, outside the dataset "
        f"folder {folder}; refused (stage download)")


def test_a_class_folder_linked_from_outside_is_refused(tmp_path) -> None:
    outside = make_folder(tmp_path / "elsewhere", {"c": 2}) / "c"
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (folder / "c").symlink_to(outside, target_is_directory=True)
    assert errors_of(tmp_path, folder).startswith(
        f"{folder / 'c'}: a symbolic link to {outside}, outside the dataset folder")
    (folder / "c").unlink()
    wrapped = make_folder(tmp_path / "w" / "inner", {"a": 2, "b": 2})
    (tmp_path / "outer").mkdir()
    (tmp_path / "outer" / "inner").symlink_to(wrapped, target_is_directory=True)
    assert errors_of(tmp_path, tmp_path / "outer").startswith(
        f"{tmp_path / 'outer' / 'inner'}: a symbolic link to {wrapped}, outside the dataset")


def test_links_inside_the_dataset_folder_are_followed_once(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    save(folder / "b" / "sub" / "x.png", pixels(5))
    (folder / "a" / "copy.png").symlink_to(folder / "b" / "000.png")  # file link
    (folder / "a" / "more").symlink_to(Path("../b/sub"), target_is_directory=True)
    (folder / "b" / "sub" / "loop").symlink_to(Path("."), target_is_directory=True)
    (tmp_path / "alias").symlink_to(folder, target_is_directory=True)  # data.path a link
    download(data_cfg(path=str(tmp_path / "alias")), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["a", "b"]
    assert data.ids == ["a/000.png", "a/001.png", "a/copy.png", "a/more/x.png",
                        "b/000.png", "b/001.png", "b/sub/x.png"]
    assert data.images.read_bytes(2) == (folder / "b" / "000.png").read_bytes()


def test_os_litter_is_ignored(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    for name in ("Thumbs.db", "THUMBS.DB", "ehthumbs.db", "desktop.ini", "Icon\r",
                 "._000.png", ".DS_Store"):
        (folder / "a" / name).write_bytes(b"litter")
    (folder / "b" / "__MACOSX").mkdir()
    (folder / "b" / "__MACOSX" / "._001.png").write_bytes(b"litter")
    (folder / "__MACOSX" / "a").mkdir(parents=True)  # not a class
    (folder / "__MACOSX" / "a" / "._000.png").write_bytes(b"litter")
    download(data_cfg(path=str(folder)), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["a", "b"]
    assert data.ids == ["a/000.png", "a/001.png", "b/000.png", "b/001.png"]


def test_macos_archive_litter_beside_a_wrapping_folder(tmp_path) -> None:
    make_folder(tmp_path / "outer" / "chest_xray", {"NORMAL": 2, "PNEUMONIA": 2})
    (tmp_path / "outer" / "__MACOSX" / "chest_xray").mkdir(parents=True)
    (tmp_path / "outer" / "Thumbs.db").write_bytes(b"litter")
    download(data_cfg(path=str(tmp_path / "outer")), tmp_path / "raw")
    assert read(tmp_path / "raw").classes == ["NORMAL", "PNEUMONIA"]


def test_a_single_class_folder_is_not_taken_for_a_wrapping_folder(tmp_path) -> None:
    folder = make_folder(tmp_path / "ds", {"one": 2})
    assert errors_of(tmp_path, folder) == (
        f"{folder}: 1 class folder found (one); at least 2 class folders are needed, one "
        f"per class (stage download)")


def test_a_link_to_nothing_is_named(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (folder / "a" / "gone.png").symlink_to(folder / "a" / "missing.png")
    assert errors_of(tmp_path, folder) == (
        f"{folder / 'a' / 'gone.png'}: not a regular file (stage download)")


@pytest.mark.parametrize(("train", "val", "test"), [
    ("Training", None, "Testing"), ("training", "validation", "testing"),
    ("Train", "Valid", "Test"), ("TRAIN", "val", "test"), ("train", "Validation", "test")])
def test_split_folders_are_recognised_by_their_usual_names(tmp_path, train, val, test) -> None:
    folder = make_folder(tmp_path / "d", {"glioma": 6, "meningioma": 6}, split=train)
    make_folder(folder, {"glioma": 3, "meningioma": 3}, split=test, seed=1)
    if val:
        make_folder(folder, {"glioma": 2, "meningioma": 2}, split=val, seed=2)
    download(data_cfg(path=str(folder)), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["glioma", "meningioma"]  # not the split folders
    splits = dict(zip(data.ids, data.splits, strict=True))
    assert splits[f"{train}/glioma/000.png"] == "train"
    assert splits[f"{test}/meningioma/002.png"] == "test"
    counts = {s: int((data.splits == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 4 if val else 0, "test": 6}
    meta = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    assert meta["splits"] == counts


def test_a_wrapped_split_layout_is_descended(tmp_path) -> None:
    folder = make_folder(tmp_path / "outer" / "Brain", {"a": 4, "b": 4}, split="Training")
    make_folder(folder, {"a": 2, "b": 2}, split="Testing", seed=1)
    download(data_cfg(path=str(tmp_path / "outer")), tmp_path / "raw")
    assert read(tmp_path / "raw").classes == ["a", "b"]


def test_two_folders_of_one_split(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2}, split="train")
    make_folder(folder, {"a": 2, "b": 2}, split="test")
    make_folder(folder, {"a": 1, "b": 1}, split="val")
    make_folder(folder, {"a": 1, "b": 1}, split="Validation")
    assert errors_of(tmp_path, folder) == (
        f"{folder}: folders Validation and val are both the val split; keep one "
        f"(stage download)")


def test_class_folders_holding_the_same_subfolders_are_ambiguous(tmp_path) -> None:
    folder = tmp_path / "brain"
    for split in ("Training", "Testing"):  # the split one level too deep
        make_folder(folder / "glioma", {split: 2})
        make_folder(folder / "meningioma", {split: 2})
    assert errors_of(tmp_path, folder) == (
        f"{folder}: ambiguous layout: every folder holds the same subfolders, found "
        f"{{glioma,meningioma}}/{{Testing,Training}}/<image>; expected <class>/<image> or "
        f"<split>/<class>/<image>, split folders named train|training, val|valid|validation, "
        f"test|testing in any case (stage download)")
    masks = tmp_path / "covid"  # masks beside the images, in an official split
    for split in ("train", "test"):
        for name in ("covid", "normal"):
            make_folder(masks / split / name, {"images": 1, "masks": 1})
    assert "found test/{covid,normal}/{images,masks}/<image>;" in errors_of(tmp_path, masks)


def test_class_folders_with_a_subfolder_each_are_not_ambiguous(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    make_folder(folder / "a", {"extra": 1})  # one common subfolder is a nested folder
    make_folder(folder / "b", {"extra": 1})
    download(data_cfg(path=str(folder)), tmp_path / "raw")
    assert read(tmp_path / "raw").classes == ["a", "b"]


def test_class_folders_map_folder_names_to_classes(tmp_path) -> None:
    long = {"adenocarcinoma": "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib",
            "large.cell.carcinoma": "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa"}
    folder = make_folder(tmp_path / "ct", {long["adenocarcinoma"]: 4,
                                           long["large.cell.carcinoma"]: 4, "normal": 4},
                         split="train")
    make_folder(folder, {long["adenocarcinoma"]: 2, long["large.cell.carcinoma"]: 2,
                         "normal": 2}, split="valid", seed=1)
    make_folder(folder, {"adenocarcinoma": 2, "large.cell.carcinoma": 2, "normal": 2},
                split="test", seed=2)
    assert "class 'adenocarcinoma' has a folder in test but not in train" in errors_of(
        tmp_path, folder)
    download(data_cfg(path=str(folder), class_folders={v: k for k, v in long.items()}),
             tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.classes == ["adenocarcinoma", "large.cell.carcinoma", "normal"]
    meta = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    assert meta["counts"] == {"adenocarcinoma": 8, "large.cell.carcinoma": 8, "normal": 8}
    label = dict(zip(data.ids, data.labels.tolist(), strict=True))
    assert label[f"train/{long['adenocarcinoma']}/000.png"] == 0  # the file keeps its path
    assert label["test/adenocarcinoma/000.png"] == 0


def test_class_folders_naming_no_folder_is_refused(tmp_path) -> None:
    folder = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    assert errors_of(tmp_path, folder, class_folders={"A_long": "a"}) == (
        "params.yaml: 'data.class_folders' names folder 'A_long', which is no class folder "
        f"of {folder} (class folders: 'a', 'b') (stage download)")


def test_class_folders_is_read_by_the_folder_source_only(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.csv").write_text("path,label\n")
    message = errors_of(tmp_path, tmp_path / "d", source="csv", name="m.csv",
                        class_folders={"a": "b"})
    assert message.startswith("params.yaml: 'data.class_folders' is not read by source csv")
    message = errors_of(tmp_path, tmp_path / "d", source="synthetic", name=None,
                        class_folders={"a": "b"})
    assert message.startswith(
        "params.yaml: 'data.class_folders' is not read by source synthetic")
