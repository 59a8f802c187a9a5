"""Benchmark: training throughput of our loop against a seed-style loop and the model's limit.

For each image size, on the same images, model (the small CNN, or ``--model``), batch size
and device:

- ``pure step``: forward + backward + optimiser step on float tensors already in memory
  (the ceiling: no data path at all), with the same speed settings as ``ours``;
- ``ours``: ``loop.train_one_epoch`` fed by ``loader.Batches`` from the uint8 array
  store (gather, convert on the device, normalise inside the model), with the speed
  settings the train stage resolves from the committed params.yaml on this device
  (``train.precision``/``channels_last: auto``: channels_last on CPU and CUDA, bf16 on
  CUDA; on the CPU, the unfolded weight gradients of ``medpipe.training.cpuconv``);
- ``seed-style``: torchvision ``ImageFolder`` over PNG files, per-image PIL transforms
  (grey, resize, ToTensor, Normalize) and a ``DataLoader`` (``--workers``), as tutorials do:
  fp32, default (NCHW) memory layout; ``plain step`` is its pure-step ceiling.

Each figure is the images/s of the fastest of ``--epochs`` timed epochs after one
warm-up epoch, all in one run, so the ratios are comparable however busy the machine is.
On CUDA, ``gpu busy`` is the share of one more epoch of ``ours`` during which a kernel
was running on the GPU (the union of the kernels' intervals that ``torch.profiler``
records, over the span of everything it recorded).
A second table puts the pure step against the hardware: its FLOP rate (the model's
training FLOPs per image, counted by ``torch.utils.flop_counter``, times its images/s)
as a share of what one large matrix product reaches on the device, in the step's
precision. A third tries what moves the limit itself: each speed setting toggled (channels_last;
the unfolded weight gradients on a CPU, bf16 on CUDA), batch size, thread count,
torch.compile.

    uv run python bench/throughput.py                      # 28, 64 and 128 px on CPU
    uv run python bench/throughput.py --sizes 64 --images 512 --device cuda
    uv run python bench/throughput.py --model resnet18 --sizes 64 --images 256 --epochs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medpipe.data import loader, phantoms, prepare, store
from medpipe.data.raw import RawDataset
from medpipe.models import architectures
from medpipe.params import loading
from medpipe.params.sections import PrepareParams
from medpipe.training import loop
from medpipe.training.cpuconv import unfold_weight_grad
from medpipe.utils import devices

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ["normal", "opacity"]
MODEL = {"name": "cnn", "small_input": False}  # what every loop trains (--model, --small-input)
PLAIN = devices.Speed()  # fp32, NCHW: what the seed-style loop runs


def make_data(root: Path, n_per_class: int, source_size: int) -> RawDataset:
    """Synthetic images, also written as PNG files in an ImageFolder layout."""
    from PIL import Image

    images, labels = phantoms.generate(n_per_class, CLASSES, source_size, seed=0)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / "png" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:06d}.png")
    return RawDataset(CLASSES, images, labels, [str(i) for i in range(len(labels))])


def build(size: int, stats: dict, device: torch.device, channels_last: bool = False):
    arch = {"name": MODEL["name"], "in_channels": 1, "num_classes": 2, "image_size": size,
            "width_mult": 1.0, "small_input": MODEL["small_input"], "dropout": 0.2,
            "mean": stats["mean"], "std": stats["std"]}
    model = architectures.build_model(arch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run_epoch, n_images: int, epochs: int, device: torch.device) -> float:
    """Images/s of the fastest of ``epochs`` timed epochs, after one warm-up epoch.

    The best epoch, as timeit takes the best repeat: other work on a shared machine only
    ever slows an epoch down, so the fastest is the closest to what the code can do."""
    run_epoch()  # warm-up: allocator, kernels, worker start-up
    best = 0.0
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        run_epoch()
        sync(device)
        best = max(best, n_images / (time.perf_counter() - start))
    return best


def pipeline_speed(device: torch.device) -> devices.Speed:
    """The speed settings the train stage uses on ``device`` with the committed params."""
    cfg = loading.load_section(ROOT / "params.yaml", "train", stage="train")
    return devices.Speed.resolve(cfg, device)


def train_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs per image of one training step (forward and backward) of ``model`` on the
    batch ``x``, as ``torch.utils.flop_counter`` counts them: the convolutions and
    matrix products, whose share of the work dominates (the optimiser, normalisation and
    activations are not counted). A model property, the same in every memory layout."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).float(), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(y)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048,
                repeats: int = 10) -> float:
    """FLOP/s of the fastest of ``repeats`` n x n matrix products: what this device's
    BLAS reaches on the densest work there is, the yardstick for the model step."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return timed(lambda: a @ b, 2 * n**3, repeats, device)


def pure_step(x: torch.Tensor, y: torch.Tensor, size: int, stats: dict, batch: int,
              device: torch.device, epochs: int, speed: devices.Speed = PLAIN) -> float:
    model, opt = build(size, stats, device, speed.channels_last)
    if speed.compile:
        model = torch.compile(model)
    x = x.to(device)
    if speed.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(device)
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    model.train()

    def run_epoch() -> None:
        for xb, yb in batches:
            with speed.autocast(device):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    with unfold_weight_grad(model, speed.unfold_grad):
        return timed(run_epoch, len(y), epochs, device)


def ours(split: store.Split, size: int, stats: dict, batch: int, device: torch.device,
         epochs: int, speed: devices.Speed) -> tuple[float, float | None]:
    """(images/s, on CUDA the share of an epoch the GPU was busy, else None)."""
    model, opt = build(size, stats, device, speed.channels_last)
    batches = loader.Batches(split, batch, shuffle=True, seed=0)

    def run_epoch() -> None:
        loop.train_one_epoch(model, batches, opt, device, speed=speed)

    with unfold_weight_grad(model, speed.unfold_grad):
        rate = timed(run_epoch, len(split.labels), epochs, device)
        return rate, (gpu_busy(run_epoch) if device.type == "cuda" else None)


def gpu_busy(run_epoch) -> float | None:
    """The share of one epoch during which a CUDA kernel was running (None if the
    profiler recorded no kernel)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_epoch()
        torch.cuda.synchronize()
    events = [(e.time_range.start, e.time_range.end, e.device_type == DeviceType.CUDA)
              for e in prof.events()]
    kernels = [(start, end) for start, end, on_gpu in events if on_gpu]
    if not kernels:
        return None
    span = max(end for _, end, _ in events) - min(start for start, _, _ in events)
    return covered(kernels) / span


def covered(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of ``intervals`` (overlaps, e.g. concurrent streams,
    counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def seed_style(png_dir: Path, size: int, stats: dict, batch: int, device: torch.device,
               epochs: int, workers: int) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Grayscale(num_output_channels=1),
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(stats["mean"], stats["std"]),
    ])
    data = datasets.ImageFolder(str(png_dir), transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True,
                                         num_workers=workers,
                                         persistent_workers=workers > 0)
    model, opt = build(size, stats, device)
    net = model.net  # the loader already normalised: skip the model's own normalisation
    net.train()

    def run_epoch() -> None:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed(run_epoch, len(data), epochs, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    p.add_argument("--images", type=int, default=1024, help="images in the training set")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per figure (best)")
    p.add_argument("--workers", type=int, default=0, help="seed-style DataLoader workers")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--model", default="cnn", choices=list(architectures.MODELS),
                   help="as train.model (default: the small CNN)")
    p.add_argument("--small-input", action="store_true", help="train.small_input: true")
    args = p.parse_args()
    MODEL.update(name=args.model, small_input=args.small_input)
    device = devices.resolve_device(args.device)
    speed = pipeline_speed(device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = make_data(root, args.images // 2, source_size=max(args.sizes))
        print(f"device {device}, threads {torch.get_num_threads()}, {len(raw.labels)} images, "
              f"batch {args.batch}, model {args.model}"
              f"{' (small input)' if args.small_input else ''}, "
              f"seed-style DataLoader workers {args.workers}")
        print(f"ours and its pure step: bf16 {speed.bf16}, channels_last "
              f"{speed.channels_last}, unfolded weight gradients {speed.unfold_grad} (the "
              f"train stage's settings here); seed-style and its plain step: fp32, NCHW")
        limits = throughput_table(raw, root, args, device, speed)
        compute_table(limits, args, device, speed)
        print("\nmoving the limit (pure step, images/s, ratio to ours' settings above):")
        for size, (x, y, stats, limit) in limits.items():
            results = limit_trials(x, y, size, stats, args, device, speed)
            row = "  ".join(f"{name} {v:.0f} ({v / limit:.2f}x)" for name, v in results.items())
            print(f"{size:>4} px: default {limit:.0f}  {row}")


def throughput_table(raw: RawDataset, root: Path, args, device: torch.device,
                     speed: devices.Speed) -> dict:
    """Print images/s per size: pure step, ours, plain step, seed-style; returns each
    size's tensors, stats and pure-step rate for the tables that follow."""
    print(f"{'px':>4} {'pure step':>10} {'ours':>8} {'ours/pure':>9} {'plain step':>10} "
          f"{'seed-style':>10} {'seed/plain':>10} {'ours/seed':>9}"
          + (f" {'gpu busy':>8}" if device.type == "cuda" else ""))
    limits = {}
    for size in args.sizes:
        cfg = PrepareParams(seed=0, val_fraction=0.1, test_fraction=0.1, image_size=size,
                            channels=1, on_error="fail", workers=1)
        stats = prepare.prepare(raw, root / f"store{size}", cfg)
        split = store.load_split(root / f"store{size}", "train")
        x = torch.from_numpy(np.array(split.images)).float() / 255.0
        y = torch.from_numpy(split.labels)
        limit = pure_step(x, y, size, stats, args.batch, device, args.epochs, speed)
        our, busy = ours(split, size, stats, args.batch, device, args.epochs, speed)
        plain = (limit if speed == PLAIN else
                 pure_step(x, y, size, stats, args.batch, device, args.epochs))
        seed = seed_style(root / "png", size, stats, args.batch, device, args.epochs,
                          args.workers)
        limits[size] = (x, y, stats, limit)
        print(f"{size:>4} {limit:>10.0f} {our:>8.0f} {our / limit:>9.2f} {plain:>10.0f} "
              f"{seed:>10.0f} {seed / plain:>10.2f} {our / seed:>9.2f}"
              + (f" {'n/a' if busy is None else f'{busy:.0%}':>8}"
                 if device.type == "cuda" else ""))
    return limits


def compute_table(limits: dict, args, device: torch.device, speed: devices.Speed) -> None:
    """Print the pure step's FLOP rate against one large matrix product on the device."""
    dtype = torch.bfloat16 if speed.bf16 else torch.float32
    peak = matmul_rate(device, dtype, n=8192 if device.type == "cuda" else 2048)
    print(f"\ncompute: the pure step's FLOP rate against a "
          f"{str(dtype).removeprefix('torch.')} matrix product on this device "
          f"({peak / 1e9:.0f} GFLOP/s; FLOPs of the convolutions and matrix products, "
          "forward + backward)")
    print(f"{'px':>4} {'GFLOP/img':>10} {'pure GFLOP/s':>12} {'of matmul':>9}")
    for size, (x, y, stats, limit) in limits.items():
        model, _ = build(size, stats, device)
        flops = train_flops(model, x[: args.batch].to(device), y[: args.batch].to(device))
        print(f"{size:>4} {flops / 1e9:>10.3f} {limit * flops / 1e9:>12.1f} "
              f"{limit * flops / peak:>9.2f}")


def limit_trials(x: torch.Tensor, y: torch.Tensor, size: int, stats: dict, args,
                 device: torch.device, speed: devices.Speed) -> dict[str, float]:
    """Pure-step throughput with one change each from ours' configuration."""
    def run(batch: int = args.batch, **changes) -> float:
        return pure_step(x, y, size, stats, batch, device, args.epochs,
                         dataclasses.replace(speed, **changes))

    results = {f"channels_last {not speed.channels_last}":
               run(channels_last=not speed.channels_last)}
    if device.type == "cuda":
        results[f"bf16 {not speed.bf16}"] = run(bf16=not speed.bf16)
    if device.type == "cpu":
        results[f"unfold {not speed.unfold_grad}"] = run(unfold_grad=not speed.unfold_grad)
    results.update({"batch 128": run(batch=128), "batch 256": run(batch=256)})
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        torch.set_num_threads(1)
        try:
            results["1 thread"] = run()
        finally:
            torch.set_num_threads(threads)
    if args.compile:
        results["torch.compile"] = run(compile=True)
    return results


if __name__ == "__main__":
    main()
