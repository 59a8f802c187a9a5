"""Stage 2, prepare: split, convert, resize and store the images for fast training.

Reads ``data/raw`` and ``params.yaml`` section ``prepare``; writes the array store
``data/prepared`` (see ``medpipe.data.store``) and ``metrics/prepare.json`` (task, counts per
split and class, image size, train-split statistics, and the unreadable image files
skipped under ``on_error: skip``).

    python -m stages.prepare --raw data/raw --out data/prepared --metrics metrics/prepare.json
"""

from __future__ import annotations

from pathlib import Path

from medpipe.data.prepare import prepare as prepare_store
from medpipe.data.sources import registry
from medpipe.params.loading import load_section, validate
from medpipe.params.sections import PrepareParams
from medpipe.utils import cli
from medpipe.utils.files import write_json


def prepare(cfg: PrepareParams, raw_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """Build the store at ``out_dir`` from the raw dataset; write its summary."""
    validate(cfg, stage="prepare")  # before the raw data is read
    stats = prepare_store(registry.read(raw_dir), out_dir, cfg)
    write_json(metrics_path, stats)
    return stats


def main(args) -> None:
    cfg = load_section(args.params, "prepare", stage="prepare")
    prepare(cfg, Path(args.raw), Path(args.out), Path(args.metrics))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--raw", default="data/raw", help="raw dataset directory (download stage)")
    p.add_argument("--out", default="data/prepared", help="array store directory")
    p.add_argument("--metrics", default="metrics/prepare.json", help="summary JSON")
    return p


if __name__ == "__main__":
    cli.run("prepare", main, get_args_parser())
