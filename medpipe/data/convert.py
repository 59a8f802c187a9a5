"""Decode and resize image files into the store, in parallel worker processes.

The file-based sources (``folder``, ``csv``) hand the prepare stage a pack of image
files of any size and format. Each task is a run of consecutive rows of one split: a
worker (one torch thread, so N workers use N cores and no more) decodes the files, converts
each with :func:`medpipe.data.pixels.to_store_pixels`, writes the rows into the split's
memory-mapped ``.npy`` file and returns integer pixel sums. Memory stays bounded: a worker
holds one image and one task's rows, and the parent holds only the tasks' results.

The output does not depend on the number of workers: every image is converted on its own
by the same function, each row is written by exactly one task, and the statistics are
exact integer sums. ``workers: 1`` runs the tasks in this process.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medpipe import PipelineError, error_line
from medpipe.data import store
from medpipe.data.imageio import ImageError, decode
from medpipe.utils.progress import track

log = logging.getLogger(__name__)

TASK_ROWS = 128  # images per task: small enough to balance the load, large enough to be cheap


@dataclass(frozen=True)
class Task:
    pack: str  # the zip holding the image files
    out: str  # the split's .npy file, already created at full size
    start: int  # the split's row that receives the first of ``files``
    files: tuple[str, ...]  # members of the pack, in row order
    channels: int
    size: int
    frame: str | int = "middle"  # of a multi-frame DICOM file (prepare.dicom_frame)


@dataclass
class Result:
    failures: list[tuple[int, str, bool]] = field(default_factory=list)  # row, error, fatal
    notes: list[tuple[int, str]] = field(default_factory=list)  # row, warning (file kept)
    sums: list[int] = field(default_factory=list)  # per channel, over the rows written
    squares: list[int] = field(default_factory=list)


_ZIPS: dict[tuple, zipfile.ZipFile] = {}  # the open pack of this process


def init_worker() -> None:
    """One torch thread per worker process: the parallelism is across processes."""
    import torch

    torch.set_num_threads(1)


def run_task(task: Task) -> Result:
    """Convert ``task``'s files into its rows of the output; collect unreadable files."""
    from medpipe.data.pixels import to_store_pixels

    # Keyed by process id: a forked worker must not share its parent's open file (and
    # so its file position); and by inode and mtime: a new pack may replace the old one.
    st = os.stat(task.pack)
    key = (os.getpid(), task.pack, st.st_ino, st.st_mtime_ns)
    zf = _ZIPS.get(key)
    if zf is None:
        _ZIPS.clear()
        zf = _ZIPS[key] = zipfile.ZipFile(task.pack)
    out = np.load(task.out, mmap_mode="r+")
    sums = np.zeros(task.channels, dtype=np.int64)
    squares = np.zeros(task.channels, dtype=np.int64)
    result = Result()
    for k, name in enumerate(task.files):
        notes: list[str] = []  # what the decoder warned about this file
        try:
            pixels = decode(zf.read(name), name, frame=task.frame, notes=notes)
            try:
                q = to_store_pixels(pixels[None], task.channels, task.size)[0].numpy()
            except PipelineError as e:  # e.g. an image with 2 channels
                raise ImageError(f"{name}: {e}") from None
        except ImageError as e:
            result.failures.append((k, str(e), e.fatal))
            continue
        result.notes += [(k, note) for note in notes]
        out[task.start + k] = q
        qi = q.astype(np.int64)
        sums += qi.sum(axis=(1, 2))
        squares += (qi * qi).sum(axis=(1, 2))
    out.flush()
    del out  # unmap: a worker's memory does not grow with the output
    result.sums, result.squares = sums.tolist(), squares.tolist()
    return result


def resolve_workers(workers: int, n_tasks: int) -> int:
    """``workers`` (0: the cores this process may use), never more than the tasks."""
    if workers == 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return max(1, min(workers, n_tasks))


def run_tasks(tasks: list[Task], workers: int) -> Iterator[Result]:
    """Yield each task's Result, in task order, from ``workers`` processes.

    Workers are forked: they start at once and share the parent's memory pages (torch,
    numpy) instead of importing everything again. The pool is started, which forks every
    worker, before anything else here starts a thread (tqdm's monitor), and this process
    has run no torch operation on the file path, so no thread pool state is inherited.
    Closing the generator early (an error) cancels the tasks not yet started.
    """
    if workers == 1:
        import torch

        # One thread here too: one image at a time is too little work to share, and
        # extra threads only contend with the decoding for the core.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for task in tasks:
                yield run_task(task)
        finally:
            torch.set_num_threads(threads)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(
        method), initializer=init_worker)
    try:
        futures = [pool.submit(run_task, task) for task in tasks]
        for future in futures:
            yield future.result()
    except BrokenProcessPool:
        raise PipelineError("a prepare worker process died (out of memory? try fewer "
                            "'prepare.workers') (stage prepare)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Converted:
    kept: dict[str, np.ndarray]  # per split: positions (in the split) of the images kept
    skipped: list[dict[str, str]]  # {"file", "error"} of each unreadable file skipped
    sums: dict[str, list[int]]  # per split, per channel: sum of the stored values
    squares: dict[str, list[int]]
    # Each warning about files that were kept, and those files: one log line per cause.
    warnings: dict[str, list[str]] = field(default_factory=dict)


def convert_files(pack: Path, files: list[str], parts: dict[str, np.ndarray], out_dir: Path,
                  channels: int, size: int, on_error: str, workers: int,
                  frame: str | int = "middle") -> Converted:
    """Write ``{split}_images.npy`` for each split of ``parts`` (indices into ``files``)."""
    tasks = []
    for name, idx in parts.items():
        path = store.images_path(out_dir, name)
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                  shape=(len(idx), channels, size, size)).flush()
        for start in range(0, len(idx), TASK_ROWS):
            rows = idx[start : start + TASK_ROWS]
            tasks.append((name, Task(str(pack), str(path), start,
                                     tuple(files[i] for i in rows), channels, size, frame)))
    n = resolve_workers(workers, len(tasks))
    log.info("decoding %d image files with %d worker process%s", len(files), n,
             "" if n == 1 else "es")
    failed: dict[str, list[int]] = {name: [] for name in parts}
    skipped: list[dict[str, str]] = []
    noted: dict[str, list[str]] = {}
    causes: dict[str, str] = {}
    sums = {name: [0] * channels for name in parts}
    squares = {name: [0] * channels for name in parts}
    gen = run_tasks([t for _, t in tasks], n)
    try:
        # The first result first: the pool forks its workers before a bar's thread starts.
        results = itertools.chain([r for r in [next(gen, None)] if r is not None], gen)
        for (name, task), result in track(zip(tasks, results, strict=True), "prepare: decoding",
                                          total=len(tasks), unit="task"):
            for row, message, fatal in result.failures:
                if fatal or on_error == "fail":
                    hint = "" if fatal else " (prepare.on_error: skip leaves such files out)"
                    raise PipelineError(f"{message}{hint} (stage prepare)")
                failed[name].append(task.start + row)
                skipped.append({"file": task.files[row], "error": message})
            for row, note in result.notes:
                # One cause however its figures vary ("... 128 bytes of excess padding"):
                # keyed without digits, shown as first seen.
                cause = causes.setdefault(re.sub(r"\d+", "#", note), note)
                noted.setdefault(cause, []).append(task.files[row])
            sums[name] = [a + b for a, b in zip(sums[name], result.sums, strict=True)]
            squares[name] = [a + b for a, b in zip(squares[name], result.squares, strict=True)]
    finally:
        gen.close()  # on an error: cancels the tasks not yet started, stops the pool
    kept = {}
    for name, idx in parts.items():
        keep = np.setdiff1d(np.arange(len(idx)), failed[name])
        if failed[name]:
            _compact(store.images_path(out_dir, name), keep)
            log.warning("split %s: skipped %d unreadable image file(s)", name,
                        len(failed[name]))
        kept[name] = keep
    for note, names in noted.items():
        log.warning("%d image file(s) decoded despite: %s (first: %s)", len(names), note,
                    names[0])
    return Converted(kept=kept, skipped=skipped, sums=sums, squares=squares, warnings=noted)


def _compact(path: Path, keep: np.ndarray, rows: int = 1024) -> None:
    """Rewrite ``path`` with only the rows ``keep``, a block at a time."""
    old = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.name + ".compact")
    new = np.lib.format.open_memmap(tmp, mode="w+", dtype=old.dtype,
                                    shape=(len(keep), *old.shape[1:]))
    for start in range(0, len(keep), rows):
        new[start : start + rows] = old[keep[start : start + rows]]
    new.flush()
    del new, old
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise PipelineError(f"{path}: cannot rewrite ({error_line(e)})") from None
