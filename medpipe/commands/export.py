"""Export a trained model to TorchScript or ONNX, for serving without this code base.

    medpipe export --model models/model.pt --out model.ts
    medpipe export --model models/model.pt --out model.onnx   # or --format onnx

    medpipe export --model models/folds --out ensemble.onnx   # the fold ensemble

Without ``--model``: the fold ensemble when there is one, else ``models/model.pt``. See
:mod:`medpipe.inference.export` for what the files hold.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medpipe.commands.output import check_writable
from medpipe.inference import ensemble
from medpipe.inference.export import FORMATS, export_onnx, export_torchscript, format_of

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    check_writable(args.out)  # before the export, which takes a while (ONNX: seconds)
    fmt = format_of(Path(args.out), args.format)
    export = export_onnx if fmt == "onnx" else export_torchscript
    model = Path(args.model) if args.model else ensemble.default_model()
    meta = export(model, Path(args.out))
    log.info("%s -> %s (%s; %s %s, input %dx%dx%d)", model, args.out,
             "ONNX" if fmt == "onnx" else "TorchScript",
             "findings" if meta["task"] == "multilabel" else "classes",
             ", ".join(meta["classes"]), meta["preprocess"]["channels"],
             meta["preprocess"]["image_size"], meta["preprocess"]["image_size"])


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medpipe export", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None,
                   help="model file, or a folder of fold models (default: models/folds if it "
                        "holds fold models, else models/model.pt)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="default: onnx for a .onnx file, else torchscript")
    return p
