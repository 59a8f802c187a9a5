"""Pin a stage process to GPUs of its own when several runs share a multi-GPU machine.

DVC's experiment queue (``dvc queue start -j N``) runs N experiments at once, each in its
own temporary workspace, and has no notion of GPUs: every run would pick ``cuda:0``.
With ``MEDPIPE_GPUS=0,1,2,3`` in the environment, the train and evaluate stages each take
an exclusive lock on free GPUs from that list and see only those (``CUDA_VISIBLE_DEVICES``
is set before CUDA starts), waiting while every listed GPU is taken.

The locks are :mod:`filelock` locks (``flock`` on Unix, ``msvcrt.locking`` on Windows) on
``gpu-<id>.lock`` files in one directory for the whole machine, ``MEDPIPE_GPU_LOCK_DIR``
(default ``<tmp>/medpipe-gpu-locks``); it must lie outside the experiments' workspaces,
which DVC creates and deletes per run. The operating system drops a lock when its process
ends, however it ends (exit, crash, SIGKILL), so a dead run never holds a GPU. Which GPU
a run gets is not a parameter and changes no output, which is also why this module is not
among the stages' DVC dependencies.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from medpipe import PipelineError

log = logging.getLogger(__name__)

ENV_GPUS = "MEDPIPE_GPUS"
ENV_LOCK_DIR = "MEDPIPE_GPU_LOCK_DIR"
# CUDA_VISIBLE_DEVICES accepts indices and GPU-/MIG- UUIDs.
_GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")

# The held locks: kept for the life of the process, since a lock object that is released
# or garbage-collected releases its GPU.
_held: list[FileLock] = []


def parse_gpus(value: str) -> list[str]:
    """``"0,1, 2"`` -> ``["0", "1", "2"]``; anything else is a PipelineError."""
    gpus = [part.strip() for part in value.split(",")]
    if not value.strip() or not all(_GPU_ID.match(g) for g in gpus) or len(set(gpus)) < len(gpus):
        raise PipelineError(f"{ENV_GPUS}={value!r}: expected distinct GPU indices (or GPU-/MIG- "
                            "UUIDs) separated by commas, e.g. 0,1,2,3")
    return gpus


def lock_dir() -> Path:
    path = Path(os.environ.get(ENV_LOCK_DIR) or Path(tempfile.gettempdir()) / "medpipe-gpu-locks")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _try_lock(path: Path) -> FileLock | None:
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def acquire(gpus: list[str], count: int = 1, *, poll: float = 1.0) -> list[str]:
    """Lock ``count`` GPUs of ``gpus``, waiting until that many are free; return them.

    The locks are held until the process ends."""
    if count > len(gpus):
        raise PipelineError(f"{count} GPUs needed but {ENV_GPUS} lists only {len(gpus)} "
                            f"({','.join(gpus)})")
    directory = lock_dir()
    announced = False
    while True:
        locks: dict[str, FileLock] = {}
        for gpu in gpus:
            lock = _try_lock(directory / f"gpu-{gpu.replace('/', '_')}.lock")
            if lock is not None:
                locks[gpu] = lock
                if len(locks) == count:
                    _held.extend(locks.values())
                    return list(locks)
        for lock in locks.values():  # not enough: let others have these while we wait
            lock.release()
        if not announced:
            announced = True
            log.info("all GPUs of %s=%s are taken; waiting for %d to be free", ENV_GPUS,
                     ",".join(gpus), count)
        time.sleep(poll)


def pin(device: str, count: int = 1) -> list[str] | None:
    """If ``MEDPIPE_GPUS`` is set and ``device`` may use CUDA, lock ``count`` free GPUs and
    make them the only visible ones; return them (None when nothing was pinned).

    Call it before anything touches CUDA. Skipped under torchrun: the launching process
    pinned the GPUs for all its ranks, and they inherit its ``CUDA_VISIBLE_DEVICES``."""
    value = os.environ.get(ENV_GPUS)
    if not value or "LOCAL_RANK" in os.environ:
        return None
    if device not in ("auto", "cuda"):
        log.info("%s ignored: the device is set to '%s'", ENV_GPUS, device)
        return None
    chosen = acquire(parse_gpus(value), count)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    log.info("pinned to GPU %s (%s=%s)", ",".join(chosen), ENV_GPUS, value)
    return chosen
