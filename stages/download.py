"""Stage 1, download: fetch or generate the raw dataset.

Reads ``params.yaml`` section ``data``; writes the raw dataset directory (``data/raw``:
the source's files plus ``dataset.json``), atomically.

    python -m stages.download --out data/raw
"""

from __future__ import annotations

from pathlib import Path

from medpipe.data.sources.registry import download
from medpipe.params.loading import load_section
from medpipe.utils import cli


def main(args) -> None:
    download(load_section(args.params, "data", stage="download"), Path(args.out))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--out", default="data/raw", help="raw dataset directory")
    return p


if __name__ == "__main__":
    cli.run("download", main, get_args_parser())
