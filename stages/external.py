"""Stage external: one external test set, scored by the unchanged model.

Reads ``params.yaml`` section ``external.<name>`` (a dataset described with the keys of
``data``; keys left out take the ``data`` section's values where they apply to the set's
source, see :mod:`medpipe.params.external`) and section ``evaluate``,
the training store ``data/prepared`` and ``models/model.pt``. Writes the set's raw data
and store under ``data/external_sets/<name>/`` and, under ``metrics/external/<name>/``,
what the evaluate stage writes for the internal test split: ``evaluate.json`` (and
``evaluate_detail.json``), ``report.md`` and the plot data, with ``prepare.json`` (and
``prepare_detail.json``) on the set's images. The threshold is the one the model's own validation
split gives (see :mod:`medpipe.data.external`). In dvc.yaml this is one stage per set
(``foreach``), so adding a set runs only its own stage.

    python -m stages.external --name site_b
"""

from __future__ import annotations

import logging
from pathlib import Path

from medpipe.data import external, store
from medpipe.data.sources import registry
from medpipe.inference.evaluate import evaluate
from medpipe.params.loading import load_external, load_section
from medpipe.params.sections import EvaluateParams, PrepareParams
from medpipe.utils import cli
from medpipe.utils.files import write_metrics

log = logging.getLogger(__name__)


def external_cfg(params: Path, name: str):
    """The ``data`` keys of ``external.<name>``, checked: the set's own, then those of the
    ``data`` section that apply to its source (:mod:`medpipe.params.external`)."""
    return load_external(params, name, stage="external")


def run(name: str, data_cfg, prep: PrepareParams, cfg: EvaluateParams, training_store: Path,
        model: Path, work: Path, metrics_dir: Path) -> dict:
    """Download and prepare the set (unreadable files and multi-frame DICOM handled as
    ``prep`` says), then evaluate the model on it."""
    registry.download(data_cfg, work / "raw", stage="external")
    summary = external.build(registry.read(work / "raw"), training_store, work / "prepared",
                             name, on_error=prep.on_error, workers=prep.workers,
                             frame=prep.dicom_frame)
    write_metrics(metrics_dir / "prepare.json", store.headline(summary), summary)
    return evaluate(cfg, model, work / "prepared", metrics_dir / "evaluate.json",
                    metrics_dir / "evaluate", metrics_dir / "report.md")


def main(args) -> None:
    params = Path(args.params)
    run(args.name, external_cfg(params, args.name),
        load_section(params, "prepare", stage="external"),
        load_section(params, "evaluate", stage="external"), Path(args.data), Path(args.model),
        Path(args.out) / args.name, Path(args.metrics) / args.name)


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the set's name in params.yaml 'external'")
    p.add_argument("--data", default="data/prepared", help="the training store")
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--out", default="data/external_sets", help="folder of the sets' data")
    p.add_argument("--metrics", default="metrics/external", help="folder of the sets' metrics")
    return p


if __name__ == "__main__":
    cli.run("external", main, get_args_parser())
