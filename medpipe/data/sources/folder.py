"""An ImageFolder dataset: one subfolder per class, optionally under train/val/test.

``data.path`` (or the archive at ``data.url``, verified by ``data.sha256``) holds either

    <class>/<image>            the pipeline splits the images (prepare.val/test_fraction)
    <split>/<class>/<image>    the official split is kept; without a validation folder,
                               prepare carves the validation split out of train

Split folders are recognised by the names public sets and exports give them, in any case
(:data:`SPLIT_NAMES`: ``train``, ``Training``, ``valid``, ``Validation``, ``Testing``, ...).
A layout whose class folders all hold the same two or more subfolders (``<class>/
Training/``, ``<class>/Testing/``; ``<class>/images/``, ``<class>/masks/``) is refused as
ambiguous. Images may sit in nested folders below their class folder. Class names are the
folder names, or what ``data.class_folders`` maps them to (so that differently named
folders of one class, in train and in test, are one class), in the order of
``data.classes`` (null: sorted; label k is the k-th); with ``data.patient_pattern``,
patient ids come from the file names. Operating-system litter
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
# The split folder names recognised, lower-cased: those of public sets and of the tools
# that export them (Kaggle, Roboflow, MedMNIST exports, torchvision ImageFolder layouts).
SPLIT_NAMES = {"train": "train", "training": "train",
               "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
EXPECTED = ("<class>/<image> or <split>/<class>/<image>, split folders named train|training, "
            "val|valid|validation, test|testing in any case")


def split_of(name: str) -> str | None:
    """The split (train, val, test) a folder named ``name`` holds, or None."""
    return SPLIT_NAMES.get(name.lower())


def fetch(cfg, out_dir: Path) -> None:
    """Scan the dataset folder, check its layout, and pack it into ``out_dir``."""
    if cfg.name is not None:
        raise PipelineError(f"params.yaml: 'data.name' is not read by source folder (class "
                            f"names are the folder names); set it to null {STAGE}")
    pack.check_params(cfg, "folder")
    out_dir.mkdir(parents=True)
    root = pack.dataset_root(cfg, out_dir)
    root, table = scan(root, cfg.class_folders)
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
    while len(entries) == 1 and entries[0].is_dir() and split_of(entries[0].name) is None:
        resolved = pack.inside(entries[0], top)
        inner = _visible(entries[0])
        if resolved in seen or not any(p.is_dir() for p in inner):
            break
        seen.add(resolved)
        root, entries = entries[0], inner
    return root, entries


def scan(root: Path, class_folders: dict[str, str] | None = None,
         ) -> tuple[Path, pd.DataFrame]:
    """(the folder holding the class or split folders, a table of file, label[, split]);
    ``class_folders`` (``data.class_folders``) renames class folders to class names."""
    top = root.resolve()
    root, entries = _unwrap(root, top)
    folders = [p.name for p in entries if p.is_dir()]
    if not folders:
        raise PipelineError(f"{root}: no class folders (expected one subfolder per class, "
                            f"optionally under train/, val/, test/) {STAGE}")
    named = _Classes(class_folders or {})
    split_names = [f for f in folders if split_of(f) is not None]
    if not split_names:
        if len(folders) == 1:
            raise PipelineError(f"{root}: 1 class folder found ({folders[0]}); at least 2 "
                                f"class folders are needed, one per class {STAGE}")
        found = _images_by_class(root, root, top, named)
        named.check_used(root)
        return root, pd.DataFrame(found, columns=["file", "label"])
    others = [f for f in folders if split_of(f) is None]
    if others:
        raise PipelineError(f"{root}: mixes split folders ({', '.join(split_names)}) with "
                            f"other folders ({', '.join(others)}); use one layout {STAGE}")
    by_split: dict[str, str] = {}
    for name in split_names:
        split = split_of(name)
        if split in by_split:
            raise PipelineError(f"{root}: folders {by_split[split]} and {name} are both the "
                                f"{split} split; keep one {STAGE}")
        by_split[split] = name
    if "train" not in by_split or "test" not in by_split:
        raise PipelineError(f"{root}: split folders {', '.join(split_names)}: train/ and "
                            f"test/ are needed (val/ is optional) {STAGE}")
    rows, classes = [], {}
    for name in split_names:  # in folder order, as the pack's order (and bytes) follow it
        found = _images_by_class(root / name, root, top, named)
        classes[name] = {label for _, label in found}
        rows += [(file, label, split_of(name)) for file, label in found]
    named.check_used(root)
    every = set().union(*classes.values())
    for name in sorted(every):
        have = [s for s in classes if name in classes[s]]
        if len(have) != len(classes):
            lacking = [s for s in classes if s not in have]
            raise PipelineError(
                f"{root}: class '{name}' has a folder in {', '.join(have)} but not in "
                f"{', '.join(lacking)}; every class needs images in every split {STAGE}")
    return root, pd.DataFrame(rows, columns=["file", "label", "split"])


class _Classes:
    """The class name of each class folder: ``data.class_folders``'s, else the folder's
    own; remembers the folders seen, so that a mapped name found nowhere is refused."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping, self.seen = mapping, set()

    def __call__(self, folder: str) -> str:
        self.seen.add(folder)
        return self.mapping.get(folder, folder)

    def check_used(self, root: Path) -> None:
        unused = [f for f in self.mapping if f not in self.seen]
        if unused:
            names = ", ".join(f"'{f}'" for f in sorted(self.seen))
            raise PipelineError(f"params.yaml: 'data.class_folders' names folder '{unused[0]}',"
                                f" which is no class folder of {root} (class folders: {names})"
                                f" {STAGE}")


def _images_by_class(folder: Path, root: Path, top: Path,
                     named: _Classes) -> list[tuple[str, str]]:
    """(file relative to ``root``, class) for every image under ``folder``'s subfolders."""
    pack.inside(folder, top)
    class_dirs = [p for p in _visible(folder) if p.is_dir()]
    _refuse_ambiguous(folder, root, class_dirs)
    found = []
    for class_dir in class_dirs:
        files = _images_under(class_dir, root, top)
        if not files:
            raise PipelineError(f"{class_dir}: class folder with no images {STAGE}")
        found += [(f, named(class_dir.name)) for f in sorted(files)]
    return found


def _refuse_ambiguous(folder: Path, root: Path, class_dirs: list[Path]) -> None:
    """Refuse class folders that all hold the same two or more subfolders: a split or a
    grouping one level too deep (``glioma/Training/``), or images beside masks
    (``covid/images/``, ``covid/masks/``), would be read as one class each."""
    if len(class_dirs) < 2:
        return
    subs = [sorted(p.name for p in _visible(d) if p.is_dir()) for d in class_dirs]
    if len(subs[0]) < 2 or any(s != subs[0] for s in subs[1:]):
        return
    here = folder.relative_to(root).as_posix() + "/" if folder != root else ""
    found = f"{here}{{{','.join(d.name for d in class_dirs)}}}/{{{','.join(subs[0])}}}/<image>"
    raise PipelineError(f"{folder}: ambiguous layout: every folder holds the same subfolders, "
                        f"found {found}; expected {EXPECTED} {STAGE}")


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
