"""MedMNIST v3 (2D subsets): download one ``.npz`` file, verify it, keep the official splits.

``data.name`` picks the subset and ``data.resolution`` its side in px (28, 64, 128 or 224).
The file comes from the MedMNIST Zenodo record, or from ``data.url`` (a mirror or an
air-gapped copy, ``http(s)://`` or ``file://``); it is checked against ``data.md5``, or the
official MD5 when that is null. Subset facts below (file checksums, class names, tasks,
split sizes) are those of the ``medmnist`` package's ``info.py``, version 3.0.2.
"""

from __future__ import annotations

import difflib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medpipe import PipelineError
from medpipe.utils import downloads

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
ZENODO = "https://zenodo.org/records/10519652/files/{file}?download=1"
STAGE = "(stage download)"


@dataclass(frozen=True)
class Subset:
    """One 2D MedMNIST subset."""

    task: str
    channels: int
    classes: tuple[str, ...]  # label i is classes[i]
    counts: tuple[int, int, int]  # train, val, test images
    md5: dict[int, str]  # official MD5 of the file of each size
    license: str = "CC BY 4.0"


ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
          "liver", "lung-left", "lung-right", "pancreas", "spleen")

SUBSETS: dict[str, Subset] = {
    "pathmnist": Subset(
        "multi-class", 3,
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
         "normal colon mucosa", "cancer-associated stroma",
         "colorectal adenocarcinoma epithelium"),
        (89996, 10004, 7180),
        {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
         128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"},
    ),
    "chestmnist": Subset(
        "multi-label, binary-class", 1,
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
         "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
         "pleural", "hernia"),
        (78468, 11219, 22433),
        {28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
         128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"},
    ),
    "dermamnist": Subset(
        "multi-class", 3,
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
         "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
         "vascular lesions"),
        (7007, 1003, 2005),
        {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
         128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"},
        license="CC BY-NC 4.0",
    ),
    "octmnist": Subset(
        "multi-class", 1,
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        (97477, 10832, 1000),
        {28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
         128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"},
    ),
    "pneumoniamnist": Subset(
        "binary-class", 1,
        ("normal", "pneumonia"),
        (4708, 524, 624),
        {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
         128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"},
    ),
    "retinamnist": Subset(
        "ordinal-regression", 3,
        ("0", "1", "2", "3", "4"),
        (1080, 120, 400),
        {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
         128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"},
    ),
    "breastmnist": Subset(
        "binary-class", 1,
        ("malignant", "normal, benign"),
        (546, 78, 156),
        {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
         128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"},
    ),
    "bloodmnist": Subset(
        "multi-class", 3,
        ("basophil", "eosinophil", "erythroblast",
         "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
         "monocyte", "neutrophil", "platelet"),
        (11959, 1712, 3421),
        {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
         128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"},
    ),
    "tissuemnist": Subset(
        "multi-class", 1,
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
         "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
         "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
        (165466, 23640, 47280),
        {28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
         128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"},
    ),
    "organamnist": Subset(
        "multi-class", 1, ORGANS, (34561, 6491, 17778),
        {28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
         128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"},
    ),
    "organcmnist": Subset(
        "multi-class", 1, ORGANS, (12975, 2392, 8216),
        {28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
         128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"},
    ),
    "organsmnist": Subset(
        "multi-class", 1, ORGANS, (13932, 2452, 8827),
        {28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
         128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"},
    ),
}

# Ordinal grades are learned as classes, as the MedMNIST benchmarks do. ChestMNIST's 14
# findings per image become multi-hot labels (the store's multi-label form).
SUPPORTED_TASKS = ("binary-class", "multi-class", "ordinal-regression",
                   "multi-label, binary-class")
MULTILABEL = "multi-label, binary-class"


def file_name(name: str, size: int) -> str:
    """The official file name: ``<name>.npz`` at 28 px, ``<name>_<size>.npz`` otherwise."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def official_url(name: str, size: int) -> str:
    return ZENODO.format(file=file_name(name, size))


def subset(name: str | None) -> Subset:
    """The subset called ``name``; unknown names list the valid ones."""
    valid = ", ".join(SUBSETS)
    if name is None:
        raise PipelineError(
            f"params.yaml: 'data.name' must name a MedMNIST subset for source medmnist; "
            f"valid: {valid} {STAGE}"
        )
    if name not in SUBSETS:
        close = difflib.get_close_matches(name, list(SUBSETS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PipelineError(
            f"params.yaml: unknown MedMNIST subset 'data.name: {name}'{hint}; valid: {valid} "
            f"{STAGE}"
        )
    info = SUBSETS[name]
    if info.task not in SUPPORTED_TASKS:
        raise PipelineError(
            f"params.yaml: 'data.name: {name}' is a {info.task} task, not supported yet "
            f"(one label per image only) {STAGE}"
        )
    return info


def resolve(cfg) -> tuple[Subset, str, str]:
    """Check the ``data`` params for this source; return (subset, url, md5)."""
    info = subset(cfg.name)
    if cfg.resolution not in SIZES:
        raise PipelineError(
            f"params.yaml: 'data.resolution' must be one of {', '.join(map(str, SIZES))} for "
            f"MedMNIST, got {cfg.resolution} {STAGE}"
        )
    url = cfg.url if cfg.url is not None else official_url(cfg.name, cfg.resolution)
    if cfg.url is not None:
        downloads.check_url(cfg.url, what="params.yaml: 'data.url'")
    if cfg.md5 is not None:
        md5 = cfg.md5.lower()
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
            raise PipelineError(
                f"params.yaml: 'data.md5' must be 32 hex digits, got '{cfg.md5}' {STAGE}"
            )
    elif cfg.resolution in info.md5:
        md5 = info.md5[cfg.resolution]
    else:  # no official checksum known: refuse rather than use an unverified file
        raise PipelineError(
            f"params.yaml: no official MD5 is known for {file_name(cfg.name, cfg.resolution)}; "
            f"set 'data.md5' {STAGE}"
        )
    return info, url, md5


def fetch(cfg, out_dir: Path) -> None:
    """Download and verify the subset's file into ``out_dir``; write ``dataset.json``."""
    info, url, md5 = resolve(cfg)
    name = file_name(cfg.name, cfg.resolution)
    out_dir.mkdir(parents=True)
    try:
        path = downloads.fetch(url, out_dir / name, md5=md5, sha256=cfg.sha256)
    except PipelineError as e:
        hint = ""
        if cfg.url is None and "cannot connect" in str(e):
            hint = "; offline? set 'data.url' to a mirror or a file:// copy"
        raise PipelineError(f"{e}{hint} {STAGE}") from None
    arrays = _load(path, url)
    _check(arrays, info, cfg.resolution, url)
    # No URL in the metadata: the same bytes from a mirror are the same dataset, so a
    # change of data.url alone leaves data/raw identical and nothing downstream reruns.
    meta = {
        "source": "medmnist",
        "name": cfg.name,
        "resolution": cfg.resolution,
        "file": name,
        "md5": md5,
        "task": info.task,
        "license": info.license,
        "classes": list(info.classes),
        "counts": {s: int(len(arrays[f"{s}_labels"])) for s in SPLITS},
        "image_shape": list(arrays["train_images"].shape[1:]),
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read(raw_dir: Path, meta: dict):
    """The three official splits, concatenated, with ``splits`` naming each image's."""
    from medpipe.data.raw import RawDataset

    path = raw_dir / meta["file"]
    multilabel = meta["task"] == MULTILABEL
    with np.load(path, allow_pickle=False) as f:
        labels = [f[f"{s}_labels"] if multilabel else f[f"{s}_labels"].reshape(-1)
                  for s in SPLITS]
    lengths = [len(x) for x in labels]
    images = SplitImages(path, lengths, tuple(meta["image_shape"]))
    splits = np.concatenate([np.full(n, s) for s, n in zip(SPLITS, lengths, strict=True)])
    ids = [f"{meta['name']}-{s}-{i:06d}" for s, n in zip(SPLITS, lengths, strict=True)
           for i in range(n)]
    return RawDataset(classes=list(meta["classes"]), images=images,
                      labels=np.concatenate(labels).astype(np.uint8 if multilabel else np.int64),
                      ids=ids, splits=splits)


class SplitImages:
    """The images of the three splits as one array indexable by integers, slices, integer
    or boolean arrays, holding one split in memory at a time.

    A ``.npz`` is compressed, so it cannot be memory-mapped; concatenating its splits
    would need twice the file's size in memory. The prepare stage walks the splits in
    order, so this way its peak is the largest split.
    """

    def __init__(self, path: Path, lengths: list[int], image_shape: tuple[int, ...]):
        self.path = path
        self.starts = np.cumsum([0, *lengths])
        self.shape = (int(self.starts[-1]), *image_shape)
        self.dtype = np.dtype(np.uint8)  # checked by fetch
        self._loaded: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        idx = np.arange(len(self))[index]
        scalar = idx.ndim == 0
        idx = np.atleast_1d(idx)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        for k in np.unique(which):
            sel = which == k
            out[sel] = self._split(int(k))[idx[sel] - self.starts[k]]
        return out[0] if scalar else out

    def _split(self, k: int) -> np.ndarray:
        if self._loaded is None or self._loaded[0] != k:
            self._loaded = None  # let the previous split go before loading the next
            with np.load(self.path, allow_pickle=False) as f:
                self._loaded = (k, f[f"{SPLITS[k]}_images"])
        return self._loaded[1]


def _load(path: Path, where: str) -> dict[str, np.ndarray]:
    keys = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{where}: not a .npz file")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise PipelineError(f"{where}: not a MedMNIST file: no array '{missing[0]}'")
            return {k: f[k] for k in keys}
    except (OSError, ValueError) as e:
        raise PipelineError(f"{where}: not a readable .npz file ({e})") from None


def _check(arrays: dict[str, np.ndarray], info: Subset, size: int, where: str) -> None:
    """A file of the wrong subset or size (a mirror mix-up) fails here, not in training."""
    shape = (size, size) if info.channels == 1 else (size, size, 3)
    for s in SPLITS:
        images, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if images.shape[1:] != shape or images.dtype != np.uint8:
            raise PipelineError(
                f"{where}: '{s}_images' has shape {images.shape[1:]} {images.dtype}, "
                f"expected {shape} uint8 for this subset at {size} px"
            )
        width = len(info.classes) if info.task == MULTILABEL else 1
        if labels.shape != (len(images), width):
            raise PipelineError(
                f"{where}: '{s}_labels' has shape {labels.shape}, expected "
                f"({len(images)}, {width})"
            )
        if info.task == MULTILABEL:
            if len(labels) and (labels.min() < 0 or labels.max() > 1):
                raise PipelineError(f"{where}: '{s}_labels' has values other than 0 and 1")
        elif len(labels) and (labels.min() < 0 or labels.max() >= len(info.classes)):
            raise PipelineError(
                f"{where}: '{s}_labels' has labels outside 0..{len(info.classes) - 1}"
            )
