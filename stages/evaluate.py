"""Stage 4, evaluate: score the model on a held-out split.

Reads ``models/model.pt``, ``data/prepared``, ``models/folds`` (the crossval stage's fold
models, when ``prepare.folds`` asks for them) and ``params.yaml`` section ``evaluate``;
writes ``metrics/evaluate_detail.json`` (see :mod:`medpipe.evaluation.multiclass`:
accuracy, balanced accuracy, ROC AUC, sensitivity, specificity, PPV, NPV, F1 overall and
per class, at 0.5 and at the threshold chosen on the validation split; 95% bootstrap
intervals; calibration error; for a multi-label store, :mod:`medpipe.evaluation.multilabel`:
the same per finding and the mean AUC), ``metrics/evaluate.json`` (the headline figures
of it that DVC compares, :mod:`medpipe.evaluation.headline`),
``metrics/report.md`` (the same as a Markdown page), under ``metrics/evaluate/`` the plot
data: ROC (``roc.json``) and precision-recall (``pr.json``) curves, the reliability
diagram (``reliability.json``) and per-image predictions (``predictions.csv``, the
confusion matrices); and under ``metrics/gradcam/`` Grad-CAM heat maps (PNG) of
``evaluate.gradcam`` images (see :mod:`medpipe.evaluation.gradcam`); ``metrics/report.html``,
the report as one self-contained page with its figures and a model card, and the figures
as PNG files under ``metrics/report_figures/`` (see :mod:`medpipe.evaluation.page`; it
also shows the data from ``metrics/prepare_detail.json``, ``metrics/prepare_preview.png`` and
``data/raw/dataset.json`` and the training curves under ``metrics/train``).

    python -m stages.evaluate --model models/model.pt --data data/prepared \
        --metrics metrics/evaluate.json --plots metrics/evaluate --report metrics/report.md \
        --gradcam metrics/gradcam --folds models/folds --html metrics/report.html \
        --figures metrics/report_figures --prepare metrics/prepare_detail.json \
        --preview metrics/prepare_preview.png --dataset data/raw/dataset.json \
        --live metrics/train
"""

from __future__ import annotations

from pathlib import Path

from medpipe.evaluation.page import PagePaths
from medpipe.inference.evaluate import evaluate
from medpipe.params.loading import load_section
from medpipe.utils import cli, gpus


def main(args) -> None:
    cfg = load_section(args.params, "evaluate", stage="evaluate")
    gpus.pin(cfg.device)  # MEDPIPE_GPUS: a free GPU of its own (medpipe/utils/gpus.py)
    page = PagePaths(Path(args.html), Path(args.figures), Path(args.prepare),
                     Path(args.preview), Path(args.dataset), Path(args.live))
    evaluate(cfg, Path(args.model), Path(args.data), Path(args.metrics), Path(args.plots),
             Path(args.report), Path(args.gradcam), Path(args.folds), page)


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--metrics", default="metrics/evaluate.json", help="metrics JSON to write")
    p.add_argument("--plots", default="metrics/evaluate", help="directory for plot data")
    p.add_argument("--report", default="metrics/report.md", help="Markdown report to write")
    p.add_argument("--gradcam", default="metrics/gradcam",
                   help="directory for the Grad-CAM heat maps (PNG)")
    p.add_argument("--folds", default="models/folds",
                   help="fold models (crossval stage); none: no cross-validation figures")
    p.add_argument("--html", default="metrics/report.html", help="HTML report to write")
    p.add_argument("--figures", default="metrics/report_figures",
                   help="directory for the report's figures (PNG)")
    p.add_argument("--prepare", default="metrics/prepare_detail.json",
                   help="prepare stage's summary (the report's data section)")
    p.add_argument("--preview", default="metrics/prepare_preview.png",
                   help="prepare stage's grid of training images")
    p.add_argument("--dataset", default="data/raw/dataset.json",
                   help="the dataset's description (download stage): its source")
    p.add_argument("--live", default="metrics/train", help="train stage's DVCLive directory")
    return p


if __name__ == "__main__":
    cli.run("evaluate", main, get_args_parser())
