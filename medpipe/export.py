"""Export a trained model to TorchScript, for serving without this code base.

    python -m medpipe.export --model models/model.pt --out model.ts

The TorchScript module takes a float batch ``(B, C, S, S)`` with intensities in [0, 1]
(the normalisation is inside it, as in training) and returns class logits; softmax gives
the probabilities. The file carries ``medpipe.json`` (classes, preprocessing, source
model digest), readable with ``torch.jit.load(path, _extra_files={"medpipe.json": ""})``.
The export is checked before it is written: the traced module must reproduce the
PyTorch model's logits (atol 1e-5) on a batch of another size than the tracing one.
ONNX is not offered: the ``onnx`` package is not a dependency of this project. TorchScript
is marked deprecated by recent torch (in favour of ``torch.export``) but still loads
everywhere, LibTorch included.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import torch

from medpipe import PipelineError, cli, models
from medpipe.fsutil import atomic_path, file_digest

log = logging.getLogger(__name__)

METADATA = "medpipe.json"
ATOL = 1e-5


def export_torchscript(model_path: Path, out: Path, seed: int = 0) -> dict:
    """Trace the model in ``model_path`` to TorchScript at ``out``; return the metadata."""
    model, ckpt = models.load_checkpoint(model_path, "cpu")  # weights_only: never runs code
    pre = ckpt["preprocess"]
    shape = (pre["channels"], pre["image_size"], pre["image_size"])
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand(2, *shape, generator=gen)
    check = torch.rand(5, *shape, generator=gen)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Recent torch (2.15 here) marks TorchScript deprecated for torch.export; it is
        # still what C++/LibTorch and most serving stacks load. Said once, in the README.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(model, example, check_trace=False)
        expected, got = model(check), traced(check)
    if not torch.allclose(expected, got, atol=ATOL, rtol=0.0):
        worst = float((expected - got).abs().max())
        raise PipelineError(f"{model_path}: the traced model differs from the original by "
                            f"{worst:.3g} (> {ATOL}); not exported")
    meta = {
        "classes": ckpt["classes"],
        "preprocess": pre,
        "input": "float32 (B, C, S, S), intensities in [0, 1]",
        "output": "logits (B, classes); softmax gives probabilities",
        "source_sha256": file_digest(model_path),
        "arch": ckpt["arch"]["name"],
    }
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        torch.jit.save(traced, str(tmp), _extra_files={METADATA: json.dumps(meta)})
    return meta


def main(args: argparse.Namespace) -> None:
    meta = export_torchscript(Path(args.model), Path(args.out))
    log.info("%s -> %s (TorchScript; classes %s, input %dx%dx%d)", args.model, args.out,
             ", ".join(meta["classes"]), meta["preprocess"]["channels"],
             meta["preprocess"]["image_size"], meta["preprocess"]["image_size"])


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--out", required=True, help="TorchScript file to write")
    return p


if __name__ == "__main__":
    cli.run("export", main, get_args_parser())
