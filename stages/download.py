"""Stage 1, download: fetch or generate the raw dataset.

Reads ``params.yaml`` section ``data``; writes the raw dataset directory (``data/raw``:
the source's files plus ``dataset.json``), atomically.

    python -m stages.download --out data/raw
"""

from __future__ import annotations

import logging
from pathlib import Path

from medpipe.data.sources import registry
from medpipe.params.loading import load_section, validate
from medpipe.params.sections import DataParams
from medpipe.utils import cli
from medpipe.utils.files import atomic_path

log = logging.getLogger(__name__)


def download(cfg: DataParams, out_dir: Path) -> None:
    """Fetch the dataset ``cfg`` describes into ``out_dir`` (replaced only on success)."""
    validate(cfg, stage="download")
    source = registry.get(cfg.source)
    with atomic_path(out_dir) as tmp:
        source.fetch(cfg, tmp)
    log.info("%s dataset written to %s", cfg.source, out_dir)


def main(args) -> None:
    download(load_section(args.params, "data", stage="download"), Path(args.out))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--out", default="data/raw", help="raw dataset directory")
    return p


if __name__ == "__main__":
    cli.run("download", main, get_args_parser())
