"""The raw layout shared by the file-based sources (``folder``, ``csv``): images packed.

The download stage copies the dataset's image files, byte for byte, into one uncompressed
zip, so ``data/raw`` is three files however many images there are (``dvc status``,
``push`` and ``pull`` handle three files, not 100,000), and the prepare stage reads only
its own dependency, ``data/raw``, by random access into the zip::

    images.zip    the image files, stored (not compressed), named by their path in the
                  dataset folder; fixed timestamps, so the same images give the same bytes
    index.csv     one row per image: file, label (a class, or findings joined by '|'),
                  and split and patient_id where known: a manifest's patient_id column,
                  else ``data.patient_pattern`` on the file names, else the DICOM files'
                  Patient ID (0010,0020) when every image has one
    dataset.json  source, task (multiclass | multilabel), classes, counts, patients and
                  where their ids come from (``patients_from``)

A dataset folder comes from ``data.path``, or from ``data.url``: an archive downloaded,
verified against ``data.sha256`` and extracted (safely) into a scratch folder first.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from medpipe import PipelineError
from medpipe.data.dicom import patient_id
from medpipe.data.imageio import PILLOW_SUFFIXES, decode
from medpipe.data.raw import order_classes
from medpipe.data.sources.archive import extract
from medpipe.utils import downloads

log = logging.getLogger(__name__)

PACK, INDEX = "images.zip", "index.csv"
SCRATCH = "_scratch"  # inside the download stage's temporary output; removed when done
STAGE = "(stage download)"
SPLITS = ("train", "val", "test")
NO_FINDING = ("", "no finding")  # multi-label rows with no finding (ChestX-ray14 style)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date
# Where the patient ids come from, as dataset.json and metrics/prepare.json say it.
FROM_COLUMN, FROM_PATTERN, FROM_DICOM = "manifest column", "file-name pattern", "dicom PatientID"


def check_params(cfg, source: str) -> None:
    """Refuse keys that ``source`` would not read, and a malformed checksum."""
    if cfg.url is None:
        for key in ("sha256", "md5"):
            if getattr(cfg, key) is not None:
                raise PipelineError(f"params.yaml: 'data.{key}' is read only with 'data.url' "
                                    f"for source {source}; set it to null {STAGE}")
        return
    if cfg.sha256 is None:
        raise PipelineError(f"params.yaml: 'data.sha256' must be set with 'data.url' for "
                            f"source {source}: it is what pins the archive's contents {STAGE}")
    digest = cfg.sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise PipelineError(
            f"params.yaml: 'data.sha256' must be 64 hex digits, got '{cfg.sha256}' {STAGE}")
    downloads.check_url(cfg.url, what="params.yaml: 'data.url'")


def dataset_root(cfg, out_dir: Path) -> Path:
    """The dataset folder: ``data.path``, or the archive at ``data.url`` extracted into a
    scratch folder of ``out_dir`` (its SHA-256 checked before anything is extracted)."""
    if cfg.url is None:
        root = Path(cfg.path)
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise PipelineError(f"params.yaml: 'data.path' {cfg.path} {what} {STAGE}")
        return root
    scratch = out_dir / SCRATCH
    scratch.mkdir(parents=True)
    try:
        archive = downloads.fetch(cfg.url, scratch / "archive", sha256=cfg.sha256,
                                 md5=cfg.md5)
    except PipelineError as e:
        raise PipelineError(f"{e} {STAGE}") from None
    try:
        extract(archive, scratch / "dataset", cfg.url)
    except PipelineError as e:
        raise PipelineError(f"{e} {STAGE}") from None
    archive.unlink()
    return scratch / "dataset"


def inside(path: Path, top: Path, what: str | None = None) -> Path:
    """``path`` resolved; refused when a symbolic link takes it out of ``top`` (the resolved
    dataset folder), as the bytes it points at would be packed into data/raw and pushed."""
    what = what or str(path)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        raise PipelineError(f"{what}: a symbolic link that loops; refused {STAGE}") from None
    if not resolved.is_relative_to(top):
        raise PipelineError(f"{what}: a symbolic link to {resolved}, outside the dataset "
                            f"folder {top}; refused {STAGE}")
    return resolved


def parse_labels(values: list[str]) -> tuple[str, list[str]]:
    """(task, classes) of a label column: multi-label when a label lists several findings
    joined by '|'; then an empty label or 'No Finding' means none."""
    if any("|" in v for v in values):
        findings = {t.strip() for v in values for t in v.split("|")}
        return "multilabel", sorted(f for f in findings if f.lower() not in NO_FINDING)
    return "multiclass", sorted(set(values))


def encode_labels(values: list[str], task: str, classes: list[str]) -> np.ndarray:
    """int64 ``(N,)`` class indices, or uint8 ``(N, K)`` multi-hot for multi-label."""
    index = {c: k for k, c in enumerate(classes)}
    if task == "multiclass":
        return np.array([index[v] for v in values], dtype=np.int64)
    out = np.zeros((len(values), len(classes)), dtype=np.uint8)
    for i, v in enumerate(values):
        for t in v.split("|"):
            t = t.strip()
            if t.lower() not in NO_FINDING:
                out[i, index[t]] = 1
    return out


def with_patients(table: pd.DataFrame, pattern: str | None, root: Path) -> pd.DataFrame:
    """``table`` with a ``patient_id`` column: the one group of ``pattern``
    (``data.patient_pattern``) searched in each image's file name; unchanged without one."""
    if pattern is None:
        return table
    if "patient_id" in table:
        raise PipelineError("params.yaml: 'data.patient_pattern' is set, but the manifest has "
                            f"a patient_id column; set 'data.patient_pattern' to null {STAGE}")
    regex, ids = re.compile(pattern), []
    for file in table["file"]:
        match = regex.search(posixpath.basename(file))
        if match is None or not match.group(1):
            raise PipelineError(f"{root / file}: file name does not match 'data.patient_pattern' "
                                f"'{pattern}' (its group must capture the patient id) {STAGE}")
        ids.append(match.group(1))
    table = table.assign(patient_id=ids)
    if "split" in table:  # an official split must keep each patient in one split
        splits = table.groupby("patient_id")["split"].unique()
        leaky = splits[splits.map(len) > 1]
        if len(leaky):
            raise PipelineError(
                f"{root}: patient '{leaky.index[0]}' (from 'data.patient_pattern') has images "
                f"in splits {', '.join(sorted(leaky.iloc[0]))}; a patient's images must all be "
                f"in one split ({len(leaky)} patients affected) {STAGE}")
    return table


def with_dicom_patients(table: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, str | None]:
    """``table`` with a ``patient_id`` column of the DICOM files' Patient ID (0010,0020),
    and :data:`FROM_DICOM`; unchanged, and None, unless every image is a DICOM file with
    a Patient ID and they name more than one patient (an anonymised set often gives every
    file one id), which is logged."""
    files = table["file"].tolist()
    # An image named .dcm, or without a Pillow suffix (then it was recognised as DICOM by
    # its content): the other files are not read again.
    dicom = [Path(f).suffix.lower() not in PILLOW_SUFFIXES for f in files]
    if not any(dicom):
        return table, None
    ids = [patient_id(root / f) if is_dicom else None for f, is_dicom in
           tqdm(list(zip(files, dicom, strict=True)), desc="reading DICOM patient ids",
                unit="img", disable=None)]
    missing = [f for f, i in zip(files, ids, strict=True) if i is None]
    if missing:
        log.warning("%d of %d images have no DICOM Patient ID (first: %s); the split is not "
                    "grouped by patient unless 'data.patient_pattern' (or a manifest's "
                    "patient_id column) gives the ids", len(missing), len(files), missing[0])
        return table, None
    if len(set(ids)) == 1 and len(ids) > 1:
        log.warning("every DICOM file has Patient ID '%s' (an anonymised set?); the split is "
                    "not grouped by patient unless 'data.patient_pattern' (or a manifest's "
                    "patient_id column) gives the ids", ids[0])
        return table, None
    table = table.assign(patient_id=ids)
    if "split" in table:  # the source's split is kept; say where it mixes patients
        splits = table.groupby("patient_id")["split"].nunique()
        leaky = splits[splits > 1]
        if len(leaky):
            log.warning("%d patients (DICOM Patient ID) have images in two splits of the "
                        "dataset's own split, first '%s'; its test figures may be too good",
                        len(leaky), leaky.index[0])
    return table, FROM_DICOM


def write(out_dir: Path, root: Path, table: pd.DataFrame, meta: dict, cfg) -> None:
    """Pack ``table.file`` (paths relative to ``root``) into ``out_dir``, with the index
    and ``dataset.json`` (``meta`` plus task, classes and counts). ``cfg`` (the ``data``
    params) gives the class order and the patient-id pattern of file names; without a
    pattern or a patient_id column, the patient ids are the DICOM files' own."""
    patients_from = (FROM_COLUMN if "patient_id" in table
                     else FROM_PATTERN if cfg.patient_pattern is not None else None)
    table = with_patients(table, cfg.patient_pattern, root)
    if patients_from is None:
        table, patients_from = with_dicom_patients(table, root)
    labels = table["label"].tolist()
    task, found = parse_labels(labels)
    if len(found) < 2:
        raise PipelineError(f"{root}: {len(found)} class(es) found ({', '.join(found)}); "
                            f"at least 2 are needed {STAGE}")
    classes = order_classes(found, cfg.classes, "download")
    encoded = encode_labels(labels, task, classes)
    counts = (encoded.sum(axis=0) if task == "multilabel"
              else np.bincount(encoded, minlength=len(classes)))
    with zipfile.ZipFile(out_dir / PACK, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in tqdm(table["file"], desc="packing images", unit="img", disable=None):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            path = root / name
            info.file_size = path.stat().st_size
            with open(path, "rb") as src, zf.open(info, "w",
                                                  force_zip64=info.file_size > 2**31) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    table.to_csv(out_dir / INDEX, index=False)
    meta = {**meta, "task": task, "classes": classes, "count": len(table),
            "counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
            "splits": ({s: int((table["split"] == s).sum()) for s in SPLITS}
                       if "split" in table else None),
            "patients": int(table["patient_id"].nunique()) if "patient_id" in table else None,
            "patients_from": patients_from}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    log.info("packed %d images (%s, %d classes) into %s", len(table), task, len(classes),
             out_dir / PACK)


def finish(out_dir: Path) -> None:
    """Remove the scratch folder (downloaded archive, extracted files) if there is one."""
    shutil.rmtree(out_dir / SCRATCH, ignore_errors=True)


# The index's columns the sources read; any other is an attribute of the image, carried
# into the store's manifest.
READ_COLUMNS = ("file", "label", "patient_id", "split")


def read(raw_dir: Path, meta: dict):
    """The packed dataset as a RawDataset whose ``images`` decode on demand."""
    from medpipe.data.raw import RawDataset

    index = pd.read_csv(raw_dir / INDEX, dtype=str, keep_default_na=False)
    files = index["file"].tolist()
    labels = encode_labels(index["label"].tolist(), meta["task"], list(meta["classes"]))
    return RawDataset(
        classes=list(meta["classes"]), images=PackedImages(raw_dir / PACK, files),
        labels=labels, ids=files,
        splits=index["split"].to_numpy() if "split" in index else None,
        groups=index["patient_id"].to_numpy() if "patient_id" in index else None,
        patients_from=meta.get("patients_from") if "patient_id" in index else None,
        attributes=index[[c for c in index.columns if c not in READ_COLUMNS]])


class PackedImages:
    """The image files in a pack, decoded one at a time (they may differ in size).

    The prepare stage hands ``path`` and ``files`` to :mod:`medpipe.data.convert`, whose
    worker processes open the zip themselves.
    """

    def __init__(self, path: Path, files: list[str]):
        self.path = Path(path)
        self.files = files
        self._zip: zipfile.ZipFile | None = None

    def __len__(self) -> int:
        return len(self.files)

    def read_bytes(self, i: int) -> bytes:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return self._zip.read(self.files[i])

    def decode(self, i: int) -> np.ndarray:
        """Pixels of image ``i``; an unreadable file raises :class:`ImageError`."""
        return decode(self.read_bytes(i), self.files[i])
