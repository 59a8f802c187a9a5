"""Stage 2, prepare: split, convert, resize and store the images for fast training.

Reads ``data/raw``, ``params.yaml`` section ``prepare`` and ``data/plan.yaml`` (the plan
stage's recipe: its side fills ``prepare.image_size`` when params.yaml leaves it at the
default; see :func:`medpipe.planning.recipe.apply_prepare`); writes the array store
``data/prepared`` (see ``medpipe.data.store``), ``metrics/prepare.json`` (images per split,
image size, files skipped, duplicates: :func:`medpipe.data.store.headline`) and
``metrics/prepare_detail.json`` (task, classes and positive class, counts per split and
class, train-split statistics, the unreadable image files skipped under
``on_error: skip``, the duplicate images found, the planned keys applied), and two plots:
a grid of training images per class, and the images per class and split.

    python -m stages.prepare --raw data/raw --out data/prepared --metrics metrics/prepare.json \
        --preview metrics/prepare_preview.png --counts metrics/prepare_counts.json \
        --plan data/plan.yaml
"""

from __future__ import annotations

from pathlib import Path

from medpipe.data import preview, store
from medpipe.data.prepare import prepare as prepare_store
from medpipe.data.sources import registry
from medpipe.params.loading import load_section, validate
from medpipe.params.sections import PrepareParams
from medpipe.planning import recipe as plans
from medpipe.utils import cli
from medpipe.utils.files import write_metrics


def prepare(cfg: PrepareParams, raw_dir: Path, out_dir: Path, metrics_path: Path,
            preview_path: Path | None = None, counts_path: Path | None = None,
            plan: dict | None = None) -> dict:
    """Build the store at ``out_dir`` from the raw dataset; write its summary and, given
    their paths, the look at its images and its counts. ``plan``: the plan as applied to
    ``cfg``, for its record."""
    validate(cfg, stage="prepare")  # before the raw data is read
    stats = {**prepare_store(registry.read(raw_dir), out_dir, cfg), **(plan or {})}
    if preview_path is not None:
        preview.write_grid(out_dir, preview_path)
    if counts_path is not None:
        preview.write_counts(out_dir, counts_path)
    write_metrics(metrics_path, store.headline(stats), stats)
    return stats


def main(args) -> None:
    cfg = load_section(args.params, "prepare", stage="prepare")
    planned = {}
    if args.plan:
        cfg, planned = plans.apply_prepare(plans.read(Path(args.plan)), cfg, where=args.plan)
    prepare(cfg, Path(args.raw), Path(args.out), Path(args.metrics),
            Path(args.preview) if args.preview else None,
            Path(args.counts) if args.counts else None, planned)


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--raw", default="data/raw", help="raw dataset directory (download stage)")
    p.add_argument("--out", default="data/prepared", help="array store directory")
    p.add_argument("--metrics", default="metrics/prepare.json", help="summary JSON")
    p.add_argument("--preview", default=None, help="PNG grid of training images per class")
    p.add_argument("--counts", default=None, help="JSON of the images per split and class")
    p.add_argument("--plan", default=None,
                   help="the plan stage's recipe (data/plan.yaml): its side, at default keys")
    return p


if __name__ == "__main__":
    cli.run("prepare", main, get_args_parser())
