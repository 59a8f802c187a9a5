"""Export a trained model to TorchScript or ONNX, for serving without this code base.

    medpipe export --model models/model.pt --out model.onnx

``--model`` may be a folder of fold models (``models/folds``): the file then holds their
ensemble, whose logits give the mean of the fold models' probabilities.

Both take a float batch ``(B, C, S, S)`` of any size B with intensities in [0, 1] (the
normalisation is inside, as in training) and return logits ``(B, classes)``: softmax gives
the class probabilities, or, for a multi-label model, a sigmoid gives each finding's. The
file carries ``medpipe.json`` (classes, task, preprocessing, source model digest): in
TorchScript as an extra file (``torch.jit.load(path, _extra_files={"medpipe.json": ""})``),
in ONNX as a metadata property (``onnxruntime``: ``session.get_modelmeta().custom_metadata_map``).
Each export is checked before it is written: the exported model, run by TorchScript or by
ONNX Runtime, must reproduce the PyTorch model's logits on a batch of another size than
the one it was traced with. TorchScript is marked deprecated by recent torch (in favour of
``torch.export``) but still loads everywhere, LibTorch included; ONNX goes through
``torch.onnx.export(dynamo=True)`` with a dynamic batch axis.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from medpipe import PipelineError
from medpipe.inference import ensemble
from medpipe.models import checkpoint
from medpipe.utils.files import atomic_path

METADATA = "medpipe.json"
ATOL = 1e-5  # TorchScript runs the same kernels
ONNX_ATOL = 1e-4  # ONNX Runtime fuses and reorders: float32 sums differ in the last bits
FORMATS = ("torchscript", "onnx")


def _load(model_path: Path, seed: int) -> tuple:
    """The model, its checkpoint, and an example and a check batch of two sizes."""
    model, ckpt = ensemble.load_model(model_path, "cpu")  # weights_only: never runs code
    pre = ckpt["preprocess"]
    shape = (pre["channels"], pre["image_size"], pre["image_size"])
    gen = torch.Generator().manual_seed(seed)
    return model, ckpt, torch.rand(2, *shape, generator=gen), torch.rand(5, *shape, generator=gen)


def _metadata(model_path: Path, ckpt: dict) -> dict:
    task = checkpoint.task_of(ckpt)
    return {
        "classes": ckpt["classes"],
        "task": task.name,
        "preprocess": ckpt["preprocess"],
        "input": "float32 (B, C, S, S), intensities in [0, 1]",
        "output": task.outputs,
        "source_sha256": ensemble.digest(model_path),
        **({"members": ckpt["members"]} if "members" in ckpt else {}),
        "arch": ckpt["arch"]["name"],
    }


def _check(model_path: Path, expected: torch.Tensor, got: torch.Tensor, atol: float,
           what: str) -> None:
    if got.shape != expected.shape or not torch.allclose(expected, got, atol=atol, rtol=0.0):
        worst = (float((expected - got).abs().max()) if got.shape == expected.shape
                 else f"shape {tuple(got.shape)}")
        raise PipelineError(f"{model_path}: the {what} model differs from the original by "
                            f"{worst} (> {atol}); not exported")


def export_torchscript(model_path: Path, out: Path, seed: int = 0) -> dict:
    """Trace the model in ``model_path`` to TorchScript at ``out``; return the metadata."""
    model, ckpt, example, check = _load(model_path, seed)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Recent torch (2.15 here) marks TorchScript deprecated for torch.export; it is
        # still what C++/LibTorch and most serving stacks load. docs/predict-and-export.md
        # says so once.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(model, example, check_trace=False)
        expected, got = model(check), traced(check)
    _check(model_path, expected, got, ATOL, "traced")
    meta = _metadata(model_path, ckpt)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        torch.jit.save(traced, str(tmp), _extra_files={METADATA: json.dumps(meta)})
    return meta


def export_onnx(model_path: Path, out: Path, seed: int = 0) -> dict:
    """Export the model in ``model_path`` to ONNX at ``out`` (input ``images`` with a
    dynamic batch axis, output ``logits``), checked with ONNX Runtime; return the metadata."""
    import onnx  # here: the import costs seconds that the other commands never need
    import onnxruntime

    model, ckpt, example, check = _load(model_path, seed)
    for name in ("onnxscript", "onnx_ir"):  # their graph passes log every step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, verbose=False,
            input_names=["images"], output_names=["logits"],
            # by position: torch 2.6 keys a mapping by input_names, later ones by forward's
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        expected = model(check)
    proto = program.model_proto
    meta = _metadata(model_path, ckpt)
    proto.metadata_props.add(key=METADATA, value=json.dumps(meta))
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"images": check.numpy()})[0])
    _check(model_path, expected, got, ONNX_ATOL, "ONNX")
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    return meta


def format_of(out: Path, given: str | None) -> str:
    """``given``, else ``onnx`` for a ``.onnx`` file and ``torchscript`` for anything else."""
    return given or ("onnx" if Path(out).suffix.lower() == ".onnx" else "torchscript")
