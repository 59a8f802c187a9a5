"""Benchmark: fp32 against bf16 autocast training steps on this device, back to back.

Each model and side is timed with the training loop's own step
(:func:`medpipe.training.loop.fastest_step`: channels_last, AdamW, the weight average,
augmentation off), fp32 and bf16 alternating ``--rounds`` times, the fastest step of each
kept; the table gives images/s and the bf16 : fp32 ratio. On a CPU, bf16 pays where the
processor has bf16 matrix units (Intel AMX, AVX-512-BF16); elsewhere autocast emulates it.

    uv run python bench/precision.py
    uv run python bench/precision.py --sides 48 64 128 --batch 64 --rounds 3 --steps 5
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from medpipe.data.store import Split
from medpipe.models.architectures import build_model
from medpipe.params.sections import TrainParams
from medpipe.task import MultiClass
from medpipe.training import loop
from medpipe.utils.seeding import seed_everything


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def rate(model_name: str, side: int, precision: str, args) -> float:
    seed_everything(0, True)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, 1, side, side), np.uint8)
    labels = np.arange(args.batch) % 2
    model = build_model({"name": model_name, "in_channels": 1, "num_classes": 2,
                         "image_size": side, "width_mult": 1.0, "small_input": False,
                         "dropout": 0.2, "mean": [0.5], "std": [0.25]})
    cfg = TrainParams(model=model_name, optimizer="adamw", batch_size=args.batch,
                      precision=precision, ema=0.99, device=args.device)
    seconds = loop.fastest_step(model, Split(images, labels), cfg, torch.device(args.device),
                                augment=None, task=MultiClass(["a", "b"]), steps=args.steps)
    return args.batch / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18"])
    p.add_argument("--sides", nargs="+", type=int, default=[32, 48, 64, 128])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="fp32/bf16 alternations")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print("model     side  fp32 img/s  bf16 img/s  bf16:fp32")
    for name in args.models:
        for side in args.sides:
            best = {"fp32": 0.0, "bf16": 0.0}
            for _ in range(args.rounds):
                for precision in best:
                    best[precision] = max(best[precision], rate(name, side, precision, args))
            print(f"{name:9} {side:4d}  {best['fp32']:10.1f}  {best['bf16']:10.1f}  "
                  f"{best['bf16'] / best['fp32']:9.2f}", flush=True)


if __name__ == "__main__":
    main()
