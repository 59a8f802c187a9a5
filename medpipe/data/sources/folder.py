"""An ImageFolder dataset: one subfolder per class, optionally under train/val/test.

``data.path`` (or the archive at ``data.url``, verified by ``data.sha256``) holds either

    <class>/<image>            the pipeline splits the images (prepare.val/test_fraction)
    train|val|test/<class>/... the official split is kept; without val/, prepare carves
                               the validation split out of train

Images may sit in nested folders below their class folder. Class names are the folder
names, in the order of ``data.classes`` (null: sorted; label k is the k-th); with
``data.patient_pattern``, patient ids come from the file names. Operating-system litter
(``.DS_Store``, ``Thumbs.db``, ``__MACOSX``, see :data:`medpipe.data.imageio.OS_LITTER`)
and files beside the class folders (a README) are ignored; a folder that holds a single
folder of folders and nothing else (as archives often do) is descended into. Symbolic
links are followed while they stay inside the dataset folder; one that leads out of it is
refused, as what it points at would be packed and pushed with the dataset. The images are
packed into ``data/raw`` (see :mod:`medpipe.data.sources.pack`); they are decoded by the
prepare stage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medpipe import PipelineError
from medpipe.data.imageio import is_image_file, is_litter, unsupported_message
from medpipe.data.sources import pack

STAGE = "(stage download)"


def fetch(cfg, out_dir: Path) -> None:
    """Scan the dataset folder, check its layout, and pack it into ``out_dir``."""
    if cfg.name is not None:
        raise PipelineError(f"params.yaml: 'data.name' is not read by source folder (class "
                            f"names are the folder names); set it to null {STAGE}")
    pack.check_params(cfg, "folder")
    out_dir.mkdir(parents=True)
    root = pack.dataset_root(cfg, out_dir)
    root, table = scan(root)
    pack.write(out_dir, root, table, {"source": "folder",
                                      "layout": "split" if "split" in table else "classes"},
               cfg)
    pack.finish(out_dir)


def read(raw_dir: Path, meta: dict):
    return pack.read(raw_dir, meta)


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not is_litter(p.name))


def _unwrap(root: Path, top: Path) -> tuple[Path, list[Path]]:
    """Descend through folders that hold one folder of folders and nothing else; a single
    folder of images is a (lone) class folder, not a wrapping folder."""
    entries, seen = _visible(root), {top}
    while len(entries) == 1 and entries[0].is_dir() and entries[0].name not in pack.SPLITS:
        resolved = pack.inside(entries[0], top)
        inner = _visible(entries[0])
        if resolved in seen or not any(p.is_dir() for p in inner):
            break
        seen.add(resolved)
        root, entries = entries[0], inner
    return root, entries


def scan(root: Path) -> tuple[Path, pd.DataFrame]:
    """(the folder holding the class or split folders, a table of file, label[, split])."""
    top = root.resolve()
    root, entries = _unwrap(root, top)
    folders = [p.name for p in entries if p.is_dir()]
    if not folders:
        raise PipelineError(f"{root}: no class folders (expected one subfolder per class, "
                            f"optionally under train/, val/, test/) {STAGE}")
    split_names = [f for f in folders if f in pack.SPLITS]
    if not split_names:
        if len(folders) == 1:
            raise PipelineError(f"{root}: 1 class folder found ({folders[0]}); at least 2 "
                                f"class folders are needed, one per class {STAGE}")
        return root, pd.DataFrame(_images_by_class(root, root, top), columns=["file", "label"])
    others = [f for f in folders if f not in pack.SPLITS]
    if others:
        raise PipelineError(f"{root}: mixes split folders ({', '.join(split_names)}) with "
                            f"other folders ({', '.join(others)}); use one layout {STAGE}")
    if "train" not in split_names or "test" not in split_names:
        raise PipelineError(f"{root}: split folders {', '.join(split_names)}: train/ and "
                            f"test/ are needed (val/ is optional) {STAGE}")
    rows, classes = [], {}
    for split in split_names:
        found = _images_by_class(root / split, root, top)
        classes[split] = {label for _, label in found}
        rows += [(file, label, split) for file, label in found]
    every = set().union(*classes.values())
    for name in sorted(every):
        have = [s for s in split_names if name in classes[s]]
        if len(have) != len(split_names):
            lacking = [s for s in split_names if s not in have]
            raise PipelineError(
                f"{root}: class '{name}' has a folder in {', '.join(have)} but not in "
                f"{', '.join(lacking)}; every class needs images in every split {STAGE}")
    return root, pd.DataFrame(rows, columns=["file", "label", "split"])


def _images_by_class(folder: Path, root: Path, top: Path) -> list[tuple[str, str]]:
    """(file relative to ``root``, class) for every image under ``folder``'s subfolders."""
    pack.inside(folder, top)
    found = []
    for class_dir in (p for p in _visible(folder) if p.is_dir()):
        files = _images_under(class_dir, root, top)
        if not files:
            raise PipelineError(f"{class_dir}: class folder with no images {STAGE}")
        found += [(f, class_dir.name) for f in sorted(files)]
    return found


def _images_under(folder: Path, root: Path, top: Path) -> list[str]:
    """The image files below ``folder``, relative to ``root``, following links inside
    ``top``; each folder is entered once, as a link to an enclosing folder would loop."""
    seen = {pack.inside(folder, top)}

    def first_visit(path: Path) -> bool:
        resolved = pack.inside(path, top)
        if resolved in seen:
            return False
        seen.add(resolved)
        return True

    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = [d for d in sorted(dirnames) if not is_litter(d) and first_visit(here / d)]
        for name in (n for n in filenames if not is_litter(n)):
            path = here / name
            pack.inside(path, top)
            if not path.is_file():  # a link to nothing, a pipe: nothing to pack
                raise PipelineError(f"{path}: not a regular file {STAGE}")
            if not is_image_file(path):  # by extension; else DICOM by its first 132 bytes
                raise PipelineError(f"{unsupported_message(str(path))} {STAGE}")
            files.append(path.relative_to(root).as_posix())
    return files
