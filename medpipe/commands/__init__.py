"""The ``medpipe`` command: what a user runs besides the DVC stages.

    medpipe predict --model models/model.pt --out predictions.csv IMAGES
    medpipe export --model models/model.pt --out model.onnx
    medpipe share push|pull|check [-r REMOTE] [--run-cache]
    medpipe recipe pneumoniamnist
    medpipe --version

Each subcommand is a module of this package with ``get_args_parser()`` and
``main(args)``; ``medpipe <command> --help`` describes it. Errors are one line on stderr
and exit status 1, as in the stages.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

from medpipe.utils import cli

COMMANDS = {
    "predict": "predict image files with a trained model",
    "export": "export a trained model to TorchScript or ONNX",
    "share": "push or pull results through a DVC remote, with faults explained",
    "recipe": "set params.yaml to a named recipe (recipes/<name>.yaml)",
}


def usage() -> str:
    lines = ["usage: medpipe <command> [options]  (medpipe <command> --help)",
             "       medpipe --version", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def version() -> str:
    """The installed package's version (pyproject.toml's, through its metadata)."""
    try:
        return importlib.metadata.version("medpipe")
    except importlib.metadata.PackageNotFoundError:  # run from a copy never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name = argv[0]
    if name in ("-V", "--version"):
        print(f"medpipe {version()}")
        sys.exit(0)
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"medpipe.commands.{name}")
    cli.run(name, module.main, module.get_args_parser(), argv[1:])
