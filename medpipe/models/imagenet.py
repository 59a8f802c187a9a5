"""ImageNet weights as a versioned pipeline input.

The ``pretrained`` stage puts the torchvision weights file that ``train.model`` needs
into ``models/pretrained/`` (a DVC output: a teammate gets it with ``dvc pull`` instead
of downloading it, and an air-gapped machine gets it from the DVC remote). The file is
taken from the torch hub cache (``$TORCH_HOME/hub/checkpoints``, where torchvision itself keeps
it), or the URL in torchvision's weights API (or ``$MEDPIPE_WEIGHTS_MIRROR`` + the file
name, for a hospital mirror). Every copy is checked against the SHA-256 prefix that
torchvision puts in the file name, and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from medpipe import PipelineError
from medpipe.models.checkpoint import safe_load
from medpipe.utils.files import atomic_path, file_digest, write_json

log = logging.getLogger(__name__)

INFO = "weights.json"  # what the directory holds; present even when no weights are needed
MIRROR_ENV = "MEDPIPE_WEIGHTS_MIRROR"  # base URL serving the same file names
_HASH = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention: name-<sha256 prefix>.pth


@dataclass(frozen=True)
class WeightsFile:
    """One weights file: where torchvision publishes it and the hash its name carries."""

    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str | None:
        m = _HASH.search(self.filename)
        return m.group(1) if m else None


def weights_file(model: str) -> WeightsFile:
    """The ImageNet weights file of a torchvision model in
    ``medpipe.models.architectures.TORCHVISION``."""
    import torchvision  # here, not at the top: its import costs seconds

    from medpipe.models.architectures import TORCHVISION

    if model not in TORCHVISION:
        raise PipelineError(
            f"params.yaml: 'train.pretrained' is not available for model '{model}' "
            "(stage pretrained)"
        )
    enum_name, entry = TORCHVISION[model].weights.split(".")
    return WeightsFile(getattr(getattr(torchvision.models, enum_name), entry).url)


def hub_cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch(wf: WeightsFile | None, out_dir: Path) -> dict:
    """Fill ``out_dir`` (atomically) with the file ``wf`` and ``weights.json``.

    ``wf`` None: no weights are needed (``train.pretrained: false``); the directory then
    holds only ``weights.json``, so the train stage's dependency still exists.
    """
    out_dir = Path(out_dir)
    if wf is None:
        info = {"pretrained": False}
        with atomic_path(out_dir) as tmp:
            tmp.mkdir(parents=True)
            write_json(tmp / INFO, info)
        return info
    cached = hub_cache() / wf.filename
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        dest = tmp / wf.filename
        if cached.is_file() and _valid(cached, wf):
            log.info("ImageNet weights from %s", cached)
            shutil.copyfile(cached, dest)
        else:
            _download(wf, dest)  # verified against the prefix as it arrives
        info = {"pretrained": True, "file": wf.filename, "url": wf.url,
                "sha256": file_digest(dest, "sha256")}
        write_json(tmp / INFO, info)
    return info


def _download(wf: WeightsFile, dest: Path) -> None:
    from medpipe.utils import downloads

    mirror = os.environ.get(MIRROR_ENV, "").strip()
    url = f"{mirror.rstrip('/')}/{wf.filename}" if mirror else wf.url
    try:
        downloads.fetch(url, dest, sha256_prefix=wf.sha256_prefix, attempts=2)
    except PipelineError as e:
        raise PipelineError(
            f"{e}; offline, put {wf.filename} (from {wf.url}) in {hub_cache()}, get a "
            f"teammate's copy with 'dvc pull models/pretrained', set {MIRROR_ENV} to a "
            f"mirror, or set 'train.pretrained: false'"
        ) from None


def _valid(path: Path, wf: WeightsFile) -> bool:
    """Whether ``path`` has the hash its name promises (torch.hub itself does not check a
    cached file again, so a truncated or substituted copy would otherwise be trusted)."""
    prefix = wf.sha256_prefix
    if prefix is None:
        return True
    digest = file_digest(path, "sha256")
    if not digest.startswith(prefix):
        log.warning("%s: SHA-256 %s... does not match the %s... in its name; not used",
                    path, digest[:12], prefix)
        return False
    return True


def load(weights_dir: Path | str) -> dict[str, torch.Tensor] | None:
    """The state dict the ``pretrained`` stage left in ``weights_dir``; None when the
    directory records that no weights are needed."""
    weights_dir = Path(weights_dir)
    info_path = weights_dir / INFO
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(
            f"{info_path}: not found; run 'dvc repro pretrained' (or 'dvc pull "
            f"{weights_dir}')"
        ) from None
    if not info.get("pretrained"):
        return None
    path = weights_dir / info["file"]
    try:
        # weights_only: a file from elsewhere must not run pickled code.
        state = safe_load(path, "cpu", "a torchvision weights file")
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run 'dvc repro pretrained'") from None
    if not isinstance(state, dict):
        raise PipelineError(f"{path}: not a state dict")
    return state


def for_training(pretrained: bool, weights_dir: Path | None) -> dict | None:
    """The ImageNet state dict the train stage starts from, or None without pretraining;
    ``weights_dir`` is the pretrained stage's output."""
    if not pretrained:
        return None
    state = load(weights_dir) if weights_dir is not None else None
    if state is None:
        where = weights_dir or "the weights directory (--weights)"
        raise PipelineError(f"{where}: holds no ImageNet weights, but 'train.pretrained' is "
                            "true; run 'dvc repro pretrained' (stage train)")
    return state
