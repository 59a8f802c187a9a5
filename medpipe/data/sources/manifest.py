"""A CSV manifest of images and labels (``data.source: csv``), read with pandas.

``data.name`` is the manifest's file name inside ``data.path`` (or inside the archive at
``data.url``). Its columns:

    path        image file, relative to the manifest; must lie inside data.path, the
                folder DVC watches, also once symbolic links are resolved
    label       a class name; or findings joined by '|' (``Effusion|Mass``), which makes
                the task multi-label, where an empty label or ``No Finding`` means none
    patient_id  optional: the split keeps each patient's images together
    split       optional: train, val or test (the official split; val may be left out)

Other columns (sex, site, age band, ...) are carried into the store's manifest, where
``evaluate.groups`` scores subgroups by them. The images are packed into ``data/raw``
with the manifest's rows as the index (see :mod:`medpipe.data.sources.pack`).
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath

import pandas as pd

from medpipe import PipelineError, error_line
from medpipe.data.imageio import is_image_file, unsupported_message
from medpipe.data.sources import pack

STAGE = "(stage download)"
REQUIRED = ("path", "label")
OPTIONAL = ("patient_id", "split")
# The store's own manifest columns, which a manifest's extra columns may not take.
STORE_COLUMNS = ("index", "class", "source_id")


def fetch(cfg, out_dir: Path) -> None:
    """Read and check the manifest, then pack its images into ``out_dir``."""
    if cfg.name is None or not cfg.name.lower().endswith(".csv"):
        raise PipelineError(f"params.yaml: 'data.name' must name the manifest, a .csv file "
                            f"inside the dataset folder, for source csv; got {cfg.name!r} "
                            f"{STAGE}")
    if cfg.class_folders:
        raise PipelineError("params.yaml: 'data.class_folders' is not read by source csv (its "
                            f"classes are the manifest's labels); set it to null {STAGE}")
    pack.check_params(cfg, "csv")
    out_dir.mkdir(parents=True)
    root = pack.dataset_root(cfg, out_dir)
    table = read_manifest(root, cfg.name)
    pack.write(out_dir, root, table, {"source": "csv", "manifest": cfg.name}, cfg)
    pack.finish(out_dir)


def read(raw_dir: Path, meta: dict):
    return pack.read(raw_dir, meta)


def read_manifest(root: Path, name: str) -> pd.DataFrame:
    """The manifest ``root/name`` as a table of file (relative to ``root``), label, and
    patient_id / split where given; every problem is one line naming the file and row."""
    rel = check_inside(name, "", f"params.yaml: 'data.name' {name}")
    path = root / rel
    pack.inside(path, root.resolve())
    if not path.is_file():
        raise PipelineError(f"{path}: manifest not found {STAGE}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not a readable CSV ({error_line(e)}) {STAGE}") from None
    table.columns = [str(c).strip() for c in table.columns]
    _check_columns(table, path)
    table = table.copy()
    for column in table.columns:
        table[column] = table[column].str.strip()

    def row(i: int) -> str:  # the line in the file: the header is line 1
        return f"{path}: row {i + 2}"

    base, top = posixpath.dirname(rel), root.resolve()
    files = []
    for i, p in enumerate(table["path"]):
        if not p:
            raise PipelineError(f"{row(i)}: empty path {STAGE}")
        files.append(check_inside(p, base, f"{row(i)}: path '{p}'"))
        pack.inside(root / files[-1], top, f"{row(i)}: path '{p}'")
        if not is_image_file(root / files[-1]):  # by extension, else DICOM by content
            raise PipelineError(f"{row(i)}: {unsupported_message(p)} {STAGE}")
    table.insert(0, "file", files)
    absent = [i for i, f in enumerate(files) if not (root / f).is_file()]
    if absent:
        raise PipelineError(f"{path}: {len(absent)} of {len(files)} image paths do not exist, "
                            f"first at row {absent[0] + 2}: {table['path'].iloc[absent[0]]} "
                            f"{STAGE}")
    dup = table["file"].duplicated(keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise PipelineError(f"{row(i)}: image '{table['path'].iloc[i]}' is listed twice "
                            f"{STAGE}")
    if "patient_id" in table:
        empty = (table["patient_id"] == "").to_numpy().nonzero()[0]
        if len(empty):
            raise PipelineError(f"{row(int(empty[0]))}: empty patient_id {STAGE}")
    if "split" in table:
        _check_splits(table, path, row)
    labels = table["label"]
    if not labels.str.contains("|", regex=False).any() and (labels == "").any():
        i = int((labels == "").to_numpy().nonzero()[0][0])
        raise PipelineError(f"{row(i)}: empty label {STAGE}")
    return table.drop(columns="path")


def _check_columns(table: pd.DataFrame, path: Path) -> None:
    """The columns the source reads are there; no other takes a name the store uses."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column '{missing[0]}' (columns: {', '.join(table.columns)}); "
            f"needed: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)} {STAGE}")
    if table.empty:
        raise PipelineError(f"{path}: no rows {STAGE}")
    taken = [c for c in table.columns if c in STORE_COLUMNS or c == "file"]
    if taken:
        raise PipelineError(f"{path}: column '{taken[0]}' is a name the pipeline uses itself "
                            f"(reserved: file, {', '.join(STORE_COLUMNS)}); rename it {STAGE}")


def check_inside(p: str, base: str, what: str) -> str:
    """``p`` (relative to ``base``) relative to the dataset folder; refuse absolute paths
    and paths leading out of it, which DVC would not watch."""
    if PurePosixPath(p).is_absolute() or p.startswith("\\") or (len(p) > 1 and p[1] == ":"):
        raise PipelineError(f"{what} is absolute; give it relative to the manifest {STAGE}")
    joined = posixpath.normpath(posixpath.join(base, p.replace("\\", "/")))
    if joined == ".." or joined.startswith("../"):
        raise PipelineError(f"{what} leads outside the dataset folder ('data.path'), where "
                            f"DVC would not see it change {STAGE}")
    return joined


def _check_splits(table: pd.DataFrame, path: Path, row) -> None:
    bad = ~table["split"].isin(pack.SPLITS)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise PipelineError(f"{row(i)}: split '{table['split'].iloc[i]}' is not one of "
                            f"{', '.join(pack.SPLITS)} {STAGE}")
    for needed in ("train", "test"):
        if not (table["split"] == needed).any():
            raise PipelineError(f"{path}: no row has split '{needed}' (train and test are "
                                f"needed, val is optional) {STAGE}")
    if "patient_id" in table:
        per_patient = table.groupby("patient_id")["split"].nunique()
        leaky = per_patient[per_patient > 1]
        if len(leaky):
            patient = leaky.index[0]
            splits = sorted(table.loc[table["patient_id"] == patient, "split"].unique())
            raise PipelineError(
                f"{path}: patient '{patient}' has images in splits {', '.join(splits)}; "
                f"a patient's images must all be in one split ({len(leaky)} patients "
                f"affected) {STAGE}")
