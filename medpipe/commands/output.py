"""The file a command writes (``--out``), checked before any work is done."""

from __future__ import annotations

import tempfile
from pathlib import Path

from medpipe import PipelineError


def check_writable(out: Path | str, flag: str = "--out") -> None:
    """Refuse in one line, before any work is done, an ``out`` that cannot be written: an
    existing folder, a path through a file, or a folder this process may not write in
    (read-only, or its permissions). A missing folder is fine where it can be made: the
    writer creates it."""
    out = Path(out).absolute()
    if out.is_dir():
        raise PipelineError(f"{flag} {out}: is a folder; give the name of a file to write")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise PipelineError(f"{flag} {out}: {folder} is a file, not a folder")
    try:  # a real write: permission bits, ACLs and read-only mounts alike
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".medpipe-write-check-"):
            pass
    except OSError as e:
        raise PipelineError(f"{flag} {out}: cannot write in {folder} "
                            f"({e.strerror or e})") from None
