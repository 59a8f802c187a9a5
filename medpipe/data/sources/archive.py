"""Safe extraction of a downloaded ``.zip`` or ``.tar(.gz|.bz2|.xz)`` dataset archive.

Before anything is written, every member is checked, and the archive is refused, naming
the member, if one would land outside the destination: an absolute path, a ``..``
component, a symbolic or hard link whose target is absolute or outside the archive, or a
device or FIFO. The archive is also refused if its contents would not fit on the disk.
Tar archives are then extracted with Python's ``data`` filter as a second line of defence.
The caller verifies the archive's SHA-256 first (:func:`medpipe.utils.downloads.fetch`).
"""

from __future__ import annotations

import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from medpipe import PipelineError, error_line


def extract(archive: Path, dest: Path, where: str) -> None:
    """Extract ``archive`` into the new directory ``dest``; ``where`` names it in errors."""
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, where)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, where)
    else:
        raise PipelineError(f"{where}: not a .zip or .tar.gz archive")


def check_name(name: str, where: str) -> str:
    """The member path, normalised; refuse absolute paths and ``..`` components."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise PipelineError(f"{where}: member '{name}' has an absolute path; refused")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise PipelineError(f"{where}: member '{name}' has a '..' path component; refused")
    return posixpath.normpath(name.replace("\\", "/"))


def check_link(name: str, target: str, hard: bool, where: str) -> str:
    """A link's target, relative to the archive root; refuse targets outside it.

    A symbolic link's target is relative to the link's own folder, a hard link's (as tar
    stores it) to the archive root.
    """
    kind = "hard link" if hard else "symbolic link"
    if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        raise PipelineError(
            f"{where}: member '{name}' is a {kind} to the absolute path '{target}'; refused")
    base = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../"):
        raise PipelineError(
            f"{where}: member '{name}' is a {kind} to '{target}', outside the archive; refused")
    return resolved


def _check_space(total: int, dest: Path, where: str) -> None:
    free = shutil.disk_usage(dest.parent).free
    if total > free:
        raise PipelineError(f"{where}: its contents need {total:,} bytes, only {free:,} are "
                            f"free on the disk of {dest.parent}")


def _extract_tar(archive: Path, dest: Path, where: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                check_name(m.name, where)
                if m.issym() or m.islnk():
                    check_link(m.name, m.linkname, m.islnk(), where)
                elif not (m.isfile() or m.isdir()):
                    raise PipelineError(f"{where}: member '{m.name}' is not a regular file, "
                                        f"folder or link; refused")
            _check_space(sum(m.size for m in members if m.isfile()), dest, where)
            dest.mkdir(parents=True)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover (older 3.11: the checks above are the defence)
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise PipelineError(f"{where}: damaged tar archive ({error_line(e)})") from None


def _extract_zip(archive: Path, dest: Path, where: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            links: dict[str, str] = {}
            for info in infos:
                name = check_name(info.filename, where)
                if stat.S_ISLNK(info.external_attr >> 16):
                    target = zf.read(info).decode("utf-8", "replace")
                    links[name] = check_link(name, target, False, where)
            _check_space(sum(i.file_size for i in infos), dest, where)
            dest.mkdir(parents=True)
            zf.extractall(dest)  # checks each member's CRC as it goes
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise PipelineError(f"{where}: damaged zip archive ({error_line(e)})") from None
    # zipfile writes a symbolic link as a small file holding its target: replace it by a
    # copy of the target, which the checks above keep inside the archive.
    for name, target in links.items():
        src = dest / target
        if not src.is_file():
            raise PipelineError(f"{where}: member '{name}' links to '{target}', which is not "
                                f"a file in the archive")
        shutil.copyfile(src, dest / name)
