"""Duplicate images in the prepared store: the same or a near-identical image in two
splits (a test image the model trained on), or under two labels (``prepare.duplicates``).

The search runs on the store's own images (uint8, resized), read back a block at a time
after they are written: one pass fits the hash to the data (on at most :data:`FIT`
images), one hashes every image. Memory stays bounded: one 64-bit hash per image, then
the pairs found. Exact copies (the same stored pixels) are counted among the groups.

**The hash.** imagehash's ``phash`` (the DCT of the 32 x 32 grey image, its top-left 8 x 8
coefficients against their median) tells photographs apart, but radiographs share their
low frequencies: of the 2,000 distinct default synthetic images at 64 px, 170 share their
``phash`` with another and 19,994 pairs lie within 4 bits. The hash here starts from the
same DCT (:func:`coefficients`), keeps the 255 AC coefficients of its 16 x 16 corner, and
is fitted to the data: bit k is the sign of the image's coefficients, less their mean,
projected on their k-th principal component over the data (PCA hashing, the baseline of
iterative quantization, Gong & Lazebnik, CVPR 2011): uncorrelated bits, each splitting the
data where it varies most. Bits beyond the components that few images span (fewer than
65) come from fixed random projections.

Near duplicates differ in at most :data:`THRESHOLD` bits (see there for why 4). Such
pairs are found without comparing all pairs: two hashes within 4 bits agree on one of 5
segments of 12-13 bits (pigeonhole), so only hashes sharing a segment's value are compared
(a vectorised popcount). Images with the same hash are joined first, so a run of identical
images costs no pairs; groups are the connected parts of the pairs found.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import eigh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from medpipe import PipelineError
from medpipe.data import store
from medpipe.data.splitting import check_split_classes
from medpipe.utils.progress import Tracker

log = logging.getLogger(__name__)

BITS = 64
# Two images are near duplicates when their hashes differ in at most 4 bits. Measured on
# 64 px stores: a brightness shift changes no bit; a JPEG re-encoding (quality 75) of the
# 64 px image itself, which is harsher than re-encoding the full-size file, changes at
# most 4 bits for 96% of the synthetic images (at most 6 bits for all) and for all the
# images of PneumoniaMNIST, BreastMNIST and the benchmark's scans. Distinct images: no pair
# of the 2,000 synthetic images lies within 6 bits, and within 4 bits PneumoniaMNIST (5,856
# images) has only its 31 pixel-identical pairs (within 6 bits, one more).
# A larger threshold would also cost more: the pigeonhole segments shrink to 64 / (t + 1)
# bits, and the pairs compared grow with the size of their buckets.
THRESHOLD = 4
FIT = 4096  # images the principal components are fitted on: 16 per coefficient
SIDE, LOW = 32, 16  # the DCT of the SIDE x SIDE grey image; its LOW x LOW lowest frequencies
LUMA = np.array([0.299, 0.587, 0.114])  # colour images are hashed as grey (ITU-R BT.601)
BLOCK_BYTES = 1 << 24  # float32 pixels per block: 16 MiB


def _dct_matrix() -> np.ndarray:
    """The LOW lowest rows of the SIDE-point DCT-II, as scipy.fftpack.dct (phash) has it."""
    k, n = np.arange(LOW)[:, None], np.arange(SIDE)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * SIDE))


@functools.lru_cache(maxsize=4)
def _resize_matrix(size: int) -> np.ndarray:
    """``R`` (SIDE x size) with ``R @ x @ R.T`` the antialiased bilinear resize of an image
    ``x`` to SIDE x SIDE, as :func:`medpipe.data.pixels.resize` does it (it is separable)."""
    if size == SIDE:
        return np.eye(SIDE)
    rows = torch.eye(size, dtype=torch.float64)[:, None, None, :]  # each a 1 x size image
    out = F.interpolate(rows, size=(1, SIDE), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[:, 0, 0, :].T.numpy()


def coefficients(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The LOW x LOW lowest DCT coefficients (DC first, row by row) of the SIDE x SIDE
    grey version of uint8 ``images`` ``(B, C, S, S)``, as ``(B, LOW * LOW)``. float32
    halves the time of float64; a sign it flips is one of a coefficient within rounding
    of the mean, which no threshold could tell apart anyway."""
    x = images[:, 0].astype(dtype) if images.shape[1] == 1 else np.tensordot(
        LUMA.astype(dtype), images[:, :3].astype(dtype), axes=([0], [1]))
    p = (_dct_matrix() @ _resize_matrix(x.shape[-1])).astype(dtype)
    return (p @ x @ p.T).reshape(len(x), LOW * LOW)


class _Rows:
    """The store's images of every split as one sequence of rows (train, then val, then
    test), read from the ``.npy`` files a block at a time. Each read maps the file and
    unmaps it again, so the pages read do not stay in this process's memory."""

    def __init__(self, out_dir: Path, names: list[str]):
        self.paths = [store.images_path(out_dir, name) for name in names]
        arrays = [np.load(path, mmap_mode="r") for path in self.paths]
        self.starts = np.cumsum([0] + [len(a) for a in arrays])
        self.n = int(self.starts[-1])
        self.block = max(1, BLOCK_BYTES // (4 * int(np.prod(arrays[0].shape[1:]))))

    def _read(self, k: int, index) -> np.ndarray:
        array = np.load(self.paths[k], mmap_mode="r")
        return np.array(array[index])

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions``, in their order."""
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        which = np.searchsorted(self.starts, ordered, side="right") - 1
        rows = np.concatenate([self._read(k, ordered[which == k] - self.starts[k])
                               for k in np.unique(which)])
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def blocks(self):
        for k in range(len(self.paths)):
            for start in range(0, int(self.starts[k + 1] - self.starts[k]), self.block):
                yield int(self.starts[k]) + start, self._read(k, slice(start,
                                                                       start + self.block))


def fit(rows: _Rows) -> tuple[np.ndarray, np.ndarray]:
    """(mean, basis): the mean of the AC coefficients over at most FIT images spread evenly
    over ``rows``, and the BITS directions the hash projects on (see the module text)."""
    positions = np.unique(np.linspace(0, rows.n - 1, min(rows.n, FIT)).round().astype(np.int64))
    c = np.concatenate([coefficients(rows.take(positions[i:i + rows.block]))[:, 1:]
                        for i in range(0, len(positions), rows.block)])
    mean = c.mean(axis=0)
    basis = np.random.default_rng(0).standard_normal((c.shape[1], BITS))
    k = min(BITS, len(c) - 1)  # the data spans at most len(c) - 1 directions
    if k > 0:  # the k largest, in ascending order of variance
        d = c.shape[1]
        _, vectors = eigh(np.cov(c - mean, rowvar=False), subset_by_index=[d - k, d - 1])
        basis[:, :k] = vectors[:, ::-1]
    return mean, basis


def hashes(rows: _Rows, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The 64-bit hash of every row: bit k (from the top) is the sign of its coefficients,
    less ``mean``, projected on ``basis[:, k]``."""
    h = np.empty(rows.n, dtype=np.uint64)
    with Tracker(rows.n, "prepare: duplicate search", unit="image") as bar:
        for start, block in rows.blocks():
            bits = (coefficients(block)[:, 1:] - mean) @ basis > 0
            h[start:start + len(block)] = np.packbits(bits, axis=1).view(">u8").ravel()
            bar.update(len(block))
    return h


def near_pairs(values: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """``(P, 2)`` index pairs ``i < j`` of distinct ``values`` (uint64) within ``threshold``
    bits, by pigeonhole: such a pair agrees on one of ``threshold + 1`` segments."""
    edges = np.linspace(0, BITS, threshold + 2).round().astype(np.uint64)
    found = [np.empty((0, 2), dtype=np.int64)]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        key = (values >> lo) & np.uint64((1 << int(hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        k = key[order]
        run = np.cumsum(np.r_[True, k[1:] != k[:-1]]) - 1
        end = np.r_[np.flatnonzero(k[1:] != k[:-1]) + 1, len(k)][run]  # each run's end
        pos, step = np.flatnonzero(end - np.arange(len(k)) > 1), 1
        while len(pos):  # compare each value with the one `step` later in its run
            a, b = order[pos], order[pos + step]
            close = np.bitwise_count(values[a] ^ values[b]) <= threshold
            found.append(np.sort(np.stack([a[close], b[close]], axis=1), axis=1))
            step += 1
            pos = pos[end[pos] - pos > step]
    pairs = np.concatenate(found)
    key = np.unique(pairs[:, 0] * len(values) + pairs[:, 1])  # each pair once
    return np.stack([key // len(values), key % len(values)], axis=1)


def groups(h: np.ndarray) -> list[np.ndarray]:
    """Positions of each group of two or more near-identical hashes, each sorted, the
    groups in order of their first position."""
    values, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    pairs = first[near_pairs(values)]
    same = np.flatnonzero(first[inverse] != np.arange(len(h)))
    a = np.r_[pairs[:, 0], first[inverse[same]]]
    b = np.r_[pairs[:, 1], same]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(h), len(h)))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    found = [g for g in np.split(order, cuts) if len(g) > 1]
    return sorted(found, key=lambda g: int(g[0]))


def _exact(rows: _Rows, found: list[np.ndarray]) -> int:
    """How many groups of ``found`` hold one image, pixel for pixel. Rows are read a block
    at a time: pieces of several groups, or a piece of a large one."""
    pieces = [(k, g[i:i + rows.block]) for k, g in enumerate(found)
              for i in range(0, len(g), rows.block)]
    same, first = [True] * len(found), {}
    batch, size = [], 0
    for n, (k, piece) in enumerate(pieces):
        batch.append((k, piece))
        size += len(piece)
        if n + 1 < len(pieces) and size + len(pieces[n + 1][1]) <= rows.block:
            continue
        images = rows.take(np.concatenate([p for _, p in batch]))
        offset = 0
        for j, p in batch:
            part = images[offset:offset + len(p)]
            offset += len(p)
            same[j] = same[j] and bool(np.all(part == first.setdefault(j, part[0])))
        batch, size = [], 0
    return sum(same)


@dataclass
class Screened:
    """The store after :func:`screen`: its splits (indices into the raw data), the train
    split's pixel sums and sums of squares per channel, and the report for the metrics."""

    parts: dict[str, np.ndarray]
    sums: list[int]
    squares: list[int]
    report: dict


def screen(out_dir: Path, parts: dict[str, np.ndarray], labels: np.ndarray,
           classes: list[str], ids: list[str], policy: str, sums: list[int],
           squares: list[int]) -> Screened:
    """Find the groups of duplicate images that span two splits or two labels in the store
    being written at ``out_dir``; report them and apply ``policy`` (prepare.duplicates):
    warn, fail, or drop all but the first copy of each group (the train one if any)."""
    names, began = list(parts), time.perf_counter()
    rows = _Rows(out_dir, names)
    # One BLAS thread: the products are small, more threads only wait on each other (a
    # 255 x 255 eigendecomposition: 1 s instead of 10 ms), and the cores change no hash.
    with threadpool_limits(limits=1):
        h = hashes(rows, *fit(rows))
    source = np.concatenate([parts[name] for name in names])  # raw index of each row
    split = np.repeat(np.arange(len(names)), [len(parts[name]) for name in names])
    leaks = [g for g in groups(h) if np.any(split[g] != split[g[0]])
             or np.any(labels[source[g]] != labels[source[g[0]]])]
    report = {"count": len(leaks),
              "exact": _exact(rows, leaks),  # groups of the same pixels
              "dropped": 0, "groups": [[ids[source[p]] for p in g] for g in leaks]}
    del rows  # the arrays are rewritten below
    log.info("duplicate search: %d images, %d groups across splits or labels, %.1f s",
             len(h), len(leaks), time.perf_counter() - began)
    if not leaks:
        return Screened(parts, sums, squares, report)
    first = ", ".join(f"{ids[source[p]]} ({names[split[p]]})" for p in leaks[0][:4])
    first += f" and {len(leaks[0]) - 4} more" if len(leaks[0]) > 4 else ""
    what = (f"{len(leaks)} group(s) of duplicate images in two splits or under two labels "
            f"(first: {first})")
    if policy == "fail":
        raise PipelineError(f"{what}; remove the copies, or set 'prepare.duplicates' to drop "
                            f"or warn (stage prepare)")
    if policy == "warn":
        log.warning("%s; listed under 'duplicates' in the prepare metrics", what)
        return Screened(parts, sums, squares, report)
    drop = np.concatenate([g[1:] for g in leaks])  # rows are in split order: train first
    parts, sums, squares = _drop(out_dir, names, parts, split, drop, sums, squares)
    check_split_classes(labels, parts, classes)
    report["dropped"] = len(drop)
    log.warning("%s; dropped %d copies, keeping the train copy where there was one", what,
                len(drop))
    return Screened(parts, sums, squares, report)


def _drop(out_dir: Path, names: list[str], parts: dict[str, np.ndarray], split: np.ndarray,
          drop: np.ndarray, sums: list[int], squares: list[int]
          ) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """Remove the rows ``drop`` (positions over the splits in order) from the store; the
    train statistics lose what the dropped train rows added to them."""
    parts, start = dict(parts), 0
    for k, name in enumerate(names):
        local = np.sort(drop[split[drop] == k] - start)
        start += len(parts[name])
        if len(local):
            path = store.images_path(out_dir, name)
            old = np.load(path, mmap_mode="r")
            step = max(1, BLOCK_BYTES // (8 * old[0].nbytes))  # rows: int64 sums below
            for i in range(0, len(local) if name == "train" else 0, step):
                gone = old[local[i:i + step]].astype(np.int64)
                sums = [a - int(b) for a, b in zip(sums, gone.sum(axis=(0, 2, 3)), strict=True)]
                squares = [a - int(b) for a, b in
                           zip(squares, (gone * gone).sum(axis=(0, 2, 3)), strict=True)]
            keep = np.setdiff1d(np.arange(len(old)), local)
            tmp = path.with_name(path.name + ".dedup")  # the store without them, by blocks
            new = np.lib.format.open_memmap(tmp, mode="w+", dtype=old.dtype,
                                            shape=(len(keep), *old.shape[1:]))
            for i in range(0, len(keep), step):
                new[i:i + step] = old[keep[i:i + step]]
            new.flush()
            del new, old
            tmp.replace(path)
            parts[name] = np.delete(parts[name], local)
    return parts, sums, squares
