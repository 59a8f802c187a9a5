"""The shell every stage shares: logging, and one-line errors with a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from medpipe import PipelineError


def run(stage: str, main: Callable[[argparse.Namespace], None],
        parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse ``argv``, run ``main``; a PipelineError becomes ``error: ...`` and exit 1."""
    args = parser.parse_args(argv)
    # Timestamped lines: a log read later (dvc queue logs, CI) tells when each step ran.
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{stage}] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr)
    logging.captureWarnings(True)
    try:
        main(args)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: stage {stage} interrupted; no output was written", file=sys.stderr)
        sys.exit(130)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file")
    return p
