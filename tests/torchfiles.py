"""PyTorch files a loader must refuse, shared by the tests of every loader."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path
from typing import Any

import torch

from medpipe.models import checkpoint


class Payload:
    """Unpickling this runs ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.marker,)



class SystemCall:
    """Unpickling this calls ``os.system("true")``: the shape of a real attack, harmless."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os.system, ("true",)


CODE = "it holds pickled objects other than tensors and plain data"
CORRUPT = "not a PyTorch file, or a corrupt or truncated one"


def unloadable_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Files that ``weights_only`` loading must refuse, each with the reason to give."""
    rng = torch.Generator().manual_seed(0)
    files: dict[str, tuple[Path, str]] = {}
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(torch.randint(0, 256, (4096,), generator=rng,
                                           dtype=torch.uint8).numpy().tobytes())
    files["random bytes"] = random_bytes, CORRUPT
    whole = tmp_path / "whole.pt"
    torch.save({"weight": torch.zeros(4096)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:3000])  # a copy cut short
    files["truncated"] = truncated, CORRUPT
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    files["empty"] = empty, CORRUPT
    code = tmp_path / "code.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "state_dict": SystemCall()}, code)
    files["pickled code"] = code, CODE
    legacy = tmp_path / "legacy.pt"  # torch's pre-zip format carries pickles too
    torch.save({"state_dict": SystemCall()}, legacy, _use_new_zipfile_serialization=False)
    files["pickled code, legacy format"] = legacy, CODE
    return files


def check_refusal(message: str, path: Path, reason: str) -> None:
    """One line naming the file and why it was refused, never advising the unsafe loader."""
    assert "\n" not in message
    assert message.startswith(f"{path}: refused: "), message
    assert reason in message, message
    assert "weights_only=False" not in message and "will likely succeed" not in message
    assert "weights_only" not in message  # no hint at the loader switch at all
