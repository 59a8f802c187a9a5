"""Prepare at scale: a folder of N PNG images through download (pack) and prepare, with 1
worker and with every core, in one run; prints a table of time, images/s and peak memory.
With every core, prepare runs without and then with the duplicate search
(:mod:`medpipe.data.duplicates`), back to back (``--rounds`` times), and the ratio of
their images/s is printed.

    python bench/prepare_scale.py                       # 100,000 PNGs of 256 x 256
    python bench/prepare_scale.py --images 20000 --dir /scratch

The images are generated (smooth grey "scans" with blobs and noise, ~30 KB as PNG) into a
temporary folder outside the repository (``--dir``, default the system's temp folder),
after checking that the disk has room for them, their pack and three stores; everything is
deleted at the end unless ``--keep``. Peak memory is sampled every 0.5 s over the whole
process tree (this process and its workers): the sum of RSS, which counts the pages the
forked workers share with this process once per process, and the sum of PSS, which
splits shared pages among their sharers (the memory the tree actually occupies).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
from PIL import Image

from medpipe.data import duplicates, prepare  # noqa: E402
from medpipe.data.sources.registry import read  # noqa: E402
from medpipe.params.loading import defaults, parse_section
from stages.download import download  # noqa: E402

CLASSES = ("normal", "abnormal")


BACKGROUNDS = 64  # distinct smooth fields, computed once per process


def _background(k: int, side: int) -> np.ndarray:
    rng = np.random.default_rng(10_000 + k)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = 90 + 60 * np.sin(3 * x + rng.uniform(0, 3)) * np.cos(2 * y + rng.uniform(0, 3))
    for _ in range(4):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.12)
        img += rng.uniform(-40, 40) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return img


_CACHE: dict[tuple[int, int], np.ndarray] = {}


def scan(i: int, side: int) -> np.ndarray:
    """Image ``i``: a shifted smooth field and noise; class 1 (odd i) has a bright blob."""
    rng = np.random.default_rng(i)
    k = i % BACKGROUNDS
    if (k, side) not in _CACHE:
        _CACHE[(k, side)] = _background(k, side)
    img = np.roll(_CACHE[(k, side)], tuple(rng.integers(-side // 8, side // 8, 2)), (0, 1))
    img = img + rng.integers(-6, 7, img.shape).astype(np.float32)
    if i % 2:
        c, r = side // 2, side // 10
        yy, xx = np.mgrid[-r:r, -r:r]
        img[c - r : c + r, c - r : c + r] += 70 * np.exp(-(xx**2 + yy**2) / (0.3 * r * r))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_scans(args: tuple[Path, int, int, int]) -> int:
    root, start, stop, side = args
    size = 0
    for i in range(start, stop):
        path = root / CLASSES[i % 2] / f"{i:06d}.png"
        Image.fromarray(scan(i, side)).save(path)
        size += path.stat().st_size
    return size


def generate(root: Path, n: int, side: int, cores: int) -> int:
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    step = 500
    jobs = [(root, s, min(s + step, n), side) for s in range(0, n, step)]
    with ProcessPoolExecutor(cores) as pool:
        return sum(pool.map(write_scans, jobs))


class PeakMemory:
    """Peak sum of RSS and of PSS over this process and all its descendants."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.rss, self.pss = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = pss = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self._stop.wait(self.interval)


def data_params(path: Path):
    return parse_section("data", {**defaults("data"), "source": "folder", "path": str(path),
                                  "classes": None}, stage="download")


def prepare_params(image_size: int, workers: int):
    return parse_section("prepare", {
        **defaults("prepare"), "seed": 0, "val_fraction": 0.1, "test_fraction": 0.1,
        "image_size": image_size, "channels": 1, "on_error": "fail", "duplicates": "warn",
        "workers": workers}, stage="prepare")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--side", type=int, default=256, help="side of the generated PNGs, px")
    p.add_argument("--image-size", type=int, default=64, help="prepare.image_size")
    p.add_argument("--workers", type=int, default=0, help="the parallel run's workers; "
                                                          "0: all cores")
    p.add_argument("--rounds", type=int, default=1, help="times the parallel run is timed "
                                                         "without and then with the search")
    p.add_argument("--dir", default=None, help="where the temporary folder goes")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores
    base = Path(tempfile.mkdtemp(prefix="medpipe-prepare-scale-", dir=args.dir))
    try:
        sample = sum(len(_png_bytes(scan(i, args.side))) for i in range(20)) / 20
        need = args.images * (2.2 * sample + 3.3 * args.image_size**2)
        free = shutil.disk_usage(base).free
        print(f"{base}: {free / 1e9:.1f} GB free, about {need / 1e9:.1f} GB needed "
              f"({sample / 1e3:.0f} KB per PNG)")
        if need > free:
            sys.exit(f"error: not enough disk space in {base}; use --dir or fewer --images")
        t = time.perf_counter()
        total = generate(base / "images", args.images, args.side, cores)
        print(f"generated {args.images} PNGs of {args.side}x{args.side} ({total / 1e9:.2f} GB) "
              f"in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        with PeakMemory() as mem:
            download(data_params(base / "images"), base / "raw")
        print(f"download stage (check + pack into data/raw/images.zip): "
              f"{time.perf_counter() - t:.1f} s, peak RSS {mem.rss / 2**20:.0f} MiB")
        runs = [(1, True)] + [(workers, search) for _ in range(args.rounds)
                              for search in (False, True)]
        rows = [_prepare(base, args.image_size, n, search) for n, search in runs]
        same = _same(base / "store-1-on", base / f"store-{workers}-on")
        same_off = _same(base / f"store-{workers}-on", base / f"store-{workers}-off")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    _report(rows, args, cores, workers, same, same_off)


def _prepare(base: Path, image_size: int, workers: int, search: bool) -> dict:
    """One timed prepare of the packed folder, with or without the duplicate search; the
    search itself is timed too (wall and CPU seconds: it runs in this process)."""
    raw = read(base / "raw")
    spent = {"wall": 0.0, "cpu": 0.0}
    screen = duplicates.screen

    def timed(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return screen(*args, **kwargs)
        finally:
            spent["wall"] += time.perf_counter() - wall
            spent["cpu"] += time.process_time() - cpu

    cpu, t = _cpu_seconds(), time.perf_counter()
    with PeakMemory() as mem, mock.patch.object(duplicates, "screen", timed):
        summary = prepare.prepare(raw, base / f"store-{workers}-{'on' if search else 'off'}",
                                  prepare_params(image_size, workers), find_duplicates=search)
    seconds, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    found = summary["duplicates"] or {"count": 0, "groups": []}
    return {"workers": workers, "search": search, "seconds": seconds,
            "rate": len(raw.ids) / seconds, "rss": mem.rss, "pss": mem.pss,
            "cpu_ms": 1000 * cpu / len(raw.ids), "groups": found["count"],
            "search_wall": spent["wall"], "search_cpu": spent["cpu"],
            "in_groups": sum(len(g) for g in found["groups"])}


def _same(a: Path, b: Path) -> bool:
    return all((a / f.name).read_bytes() == f.read_bytes() for f in sorted(b.iterdir()))


def _report(rows: list[dict], args, cores: int, workers: int, same: bool,
            same_off: bool) -> None:
    single = rows[0]["rate"]
    print(f"\nprepare: {args.images} PNG images {args.side}x{args.side} -> {args.image_size} px "
          f"grey, {cores} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'workers':>7} {'duplicate search':>16} {'seconds':>8} {'images/s':>9} "
          f"{'speed-up':>8} {'CPU ms/image':>12} {'peak RSS sum':>12} {'peak PSS':>9} "
          f"{'search s (CPU s)':>16}")
    for r in rows:
        timing = f"{r['search_wall']:.1f} ({r['search_cpu']:.1f})" if r["search"] else "-"
        print(f"{r['workers']:>7} {'on' if r['search'] else 'off':>16} {r['seconds']:>8.1f} "
              f"{r['rate']:>9.0f} {r['rate'] / single:>7.2f}x {r['cpu_ms']:>12.2f} "
              f"{r['rss'] / 2**30:>8.2f} GiB {r['pss'] / 2**30:>5.2f} GiB {timing:>16}")
    # CPU time per image does not depend on what else runs on the machine: if the workers
    # spend no more of it than one process does, the wall-clock speed-up on idle cores is
    # bounded only by the cores (and the disk), whatever this run's load average.
    parallel = [r for r in rows if r["search"]][-1]
    print(f"CPU time per image, {workers} workers / 1 worker: "
          f"{parallel['cpu_ms'] / rows[0]['cpu_ms']:.2f} (1.00: no parallel overhead)")
    print(f"stores identical (1 vs {workers} workers): {'yes' if same else 'NO'}; "
          f"(search on vs off, policy warn): {'yes' if same_off else 'NO'}")
    speedup = parallel["rate"] / single
    print(f"speed-up with {workers} workers: {speedup:.2f}x ({speedup / workers:.2f} per "
          f"worker); peak PSS {max(r['pss'] for r in rows) / 2**30:.2f} GiB")
    pairs = list(zip(rows[1::2], rows[2::2], strict=True))
    ratios = ", ".join(f"{on['rate'] / off['rate']:.3f}" for off, on in pairs)
    print(f"images/s with the duplicate search / without ({workers} workers, back to back): "
          f"{ratios}; the search took {parallel['search_wall']:.1f} s of "
          f"{parallel['seconds']:.1f} s ({parallel['search_wall'] / parallel['seconds']:.1%}) "
          f"and found {parallel['groups']:,} groups across splits or labels, "
          f"{parallel['in_groups']:,} images")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


if __name__ == "__main__":
    main()
