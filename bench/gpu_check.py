"""GPU check: plan and train on CUDA (bf16, channels_last), resume and determinism there,
and the 224 px throughput table against a tutorial-style loop with the GPU's busy time.

Needs PyTorch and torchvision only: no DVC, no network (the data is synthetic, made
here). ``--dry-run`` does the same on the CPU at tiny sizes in seconds, as a test does::

    bash bench/gpu.sh                                  # on the GPU machine, < 8 minutes
    python bench/gpu_check.py --dry-run                # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script on a machine without the package installed

from medpipe.data import phantoms, prepare  # noqa: E402
from medpipe.data.sources import registry  # noqa: E402
from medpipe.params.sections import (  # noqa: E402
    AugmentParams,
    PlanParams,
    PrepareParams,
    TrainParams,  # noqa: E402
)
from medpipe.planning import recipe  # noqa: E402
from medpipe.utils.devices import Speed, resolve_device  # noqa: E402
from stages.plan import plan  # noqa: E402
from stages.train import train  # noqa: E402

FULL = dict(device="cuda", size=128, n_per_class=1500, budget=1.5, steps=5, epochs=3,
            throughput=["--device", "cuda", "--sizes", "224", "--images", "2048",
                        "--epochs", "2"], models=["resnet18", "mobilenet_v2"])
DRY = dict(device="cpu", size=32, n_per_class=40, budget=2, steps=1, epochs=2,
           throughput=["--device", "cpu", "--sizes", "32", "--images", "64", "--epochs",
                       "1", "--batch", "16"], models=["cnn"])


class Interrupted(Exception):
    pass


def make_raw(root: Path, size: int, n_per_class: int) -> Path:
    """A raw dataset as the synthetic source writes it (the plan reads raw data)."""
    images, labels = phantoms.generate(n_per_class, ["normal", "opacity"], size, seed=0)
    raw = root / "raw"
    raw.mkdir()
    np.save(raw / "images.npy", images)
    np.save(raw / "labels.npy", labels)
    (raw / "dataset.json").write_text(json.dumps({"source": "synthetic",
                                                  "classes": ["normal", "opacity"]}))
    return raw


def train_once(applied: recipe.Applied, store: Path, out: Path, state: Path | None = None,
               stop_after: int | None = None) -> dict[str, torch.Tensor]:
    def on_epoch(epoch: int, _metrics: dict) -> None:
        if stop_after is not None and epoch > stop_after:
            raise Interrupted  # the state of epoch stop_after is on disk
    train(applied.train, applied.augment, store, out, out.with_suffix(".json"),
          on_epoch=on_epoch, state_path=state, plan=applied)
    return torch.load(out, weights_only=True)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, a few steps")
    cfg = DRY if p.parse_args().dry_run else FULL
    device = resolve_device(cfg["device"])
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    with tempfile.TemporaryDirectory(prefix="medpipe-gpu-") as tmp:
        root = Path(tmp)
        raw = make_raw(root, cfg["size"], cfg["n_per_class"])
        start = time.perf_counter()
        base = PrepareParams(image_size=cfg["size"], workers=1)
        report = plan(PlanParams(budget_minutes=cfg["budget"], timed_steps=cfg["steps"]),
                      base, cfg["device"], raw, root / "plan.yaml", root / "plan.json")
        print(f"plan in {time.perf_counter() - start:.1f} s: {report['chosen']}, "
              f"{report['choices']['train.epochs']['value']} epochs in {cfg['budget']} min; "
              "candidates: " + ", ".join(f"{c['name']} {c['images_per_second']:.0f}/s"
                                         for c in report["candidates"]))
        planned = recipe.read(root / "plan.yaml")
        store = root / "store"  # prepared at the planned side, as the prepare stage does
        prepare.prepare(registry.read(raw), store, recipe.apply_prepare(planned, base)[0])
        planned["train"].update(epochs=cfg["epochs"], warmup_epochs=1)  # a short check
        applied = recipe.apply(planned, TrainParams(device=cfg["device"]), AugmentParams())
        speed = Speed.resolve(applied.train, device)
        print(f"train: bf16 {speed.bf16}, channels_last {speed.channels_last}")
        check(applied, store, root)
    tp = [sys.executable, str(ROOT / "bench" / "throughput.py"), *cfg["throughput"]]
    for model in cfg["models"]:
        print(f"\n$ {' '.join(tp[1:])} --model {model}", flush=True)
        subprocess.run([*tp, "--model", model], check=True, cwd=ROOT)


def check(applied: recipe.Applied, store: Path, root: Path) -> None:
    """Determinism (two runs, the same weights) and resume (a run stopped after epoch 1
    and resumed ends with the same weights)."""
    start = time.perf_counter()
    first = train_once(applied, store, root / "a.pt")
    print(f"trained {applied.train.epochs} epochs in {time.perf_counter() - start:.1f} s")
    second = train_once(applied, store, root / "b.pt")
    print(f"determinism: two runs give the same weights: {same(first, second)}")
    state = root / "state.pt"
    with contextlib.suppress(Interrupted):
        train_once(applied, store, root / "c.pt", state, stop_after=1)
    resumed = train_once(applied, store, root / "c.pt", state)
    print(f"resume: stopped after epoch 1 and resumed, the same weights: "
          f"{same(first, resumed)}")
    if not (same(first, second) and same(first, resumed)):
        sys.exit("FAILED: determinism or resume")


if __name__ == "__main__":
    main()
