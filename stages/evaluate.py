"""Stage 4, evaluate: score the model on a held-out split.

Reads ``models/model.pt``, ``data/prepared``, ``models/folds`` (the crossval stage's fold
models, when ``prepare.folds`` asks for them) and ``params.yaml`` section ``evaluate``;
writes ``metrics/evaluate.json`` (see :mod:`medpipe.evaluation.multiclass`: accuracy, balanced
accuracy, ROC AUC, sensitivity, specificity, PPV, NPV, F1 overall and per class, at 0.5
and at the threshold chosen on the validation split; 95% bootstrap intervals;
calibration error; for a multi-label store, :mod:`medpipe.evaluation.multilabel`: the
same per finding and the mean AUC),
``metrics/report.md`` (the same as a Markdown page), under ``metrics/evaluate/`` the plot
data: ROC (``roc.json``) and precision-recall (``pr.json``) curves, the reliability
diagram (``reliability.json``) and per-image predictions (``predictions.csv``, the
confusion matrices); and under ``metrics/gradcam/`` Grad-CAM heat maps (PNG) of
``evaluate.gradcam`` images (see :mod:`medpipe.evaluation.gradcam`).

    python -m stages.evaluate --model models/model.pt --data data/prepared \
        --metrics metrics/evaluate.json --plots metrics/evaluate --report metrics/report.md \
        --gradcam metrics/gradcam --folds models/folds
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medpipe.data import store
from medpipe.evaluation import crossval, gradcam, groups, outputs, tasks
from medpipe.inference import crossval as fold_scoring
from medpipe.inference import ensemble
from medpipe.inference.predictor import score_split
from medpipe.models import checkpoint
from medpipe.params.loading import load_section, validate
from medpipe.params.sections import EvaluateParams
from medpipe.utils import cli, devices, gpus
from medpipe.utils.files import atomic_path, file_digest, write_json, write_text

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateParams, model_path: Path, data_dir: Path, metrics_path: Path,
             plots_dir: Path, report_path: Path, gradcam_dir: Path | None = None,
             folds_dir: Path | None = None) -> dict:
    """Score ``cfg.split``; write the metrics, the plot data, the report and, with
    ``gradcam_dir``, the Grad-CAM heat maps (the directory always, empty with
    ``evaluate.gradcam: 0``, since DVC expects every declared output). With fold models
    in ``folds_dir``, the cross-validation figures and the fold ensemble's too."""
    validate(cfg, stage="evaluate")
    device = devices.resolve_device(cfg.device)
    model, ckpt = checkpoint.load_checkpoint(model_path, device)
    checkpoint.check_matches_store(model_path, ckpt, data_dir, store.read_stats(data_dir))
    task = checkpoint.task_of(ckpt, str(model_path))
    ev = tasks.evaluation_of(task)

    # Probabilities of the scored split, and of val where the threshold is chosen there.
    labels, probs, images = score_split(model, data_dir, cfg.split, cfg.batch_size, device,
                                        task, cfg.tta)
    val_labels = val_probs = None
    if tasks.needs_validation(cfg, task):
        val_labels, val_probs = (labels, probs) if cfg.split == "val" else score_split(
            model, data_dir, "val", cfg.batch_size, device, task, cfg.tta)[:2]
    summary, reliability = ev.summarise(labels, probs, task.classes, cfg, val_labels,
                                        val_probs)
    summary["model_sha256"] = file_digest(model_path)
    summary["tta"] = cfg.tta  # `medpipe predict --metrics` averages the same views
    manifest = pd.read_csv(data_dir / store.MANIFEST)
    cases = manifest[manifest["split"] == cfg.split].reset_index(drop=True)
    if cfg.groups:
        groups.check_columns(manifest, cfg.groups, str(data_dir / store.MANIFEST))
        summary["groups"] = groups.subgroups(ev.group_figures, labels, probs, task.classes,
                                             cases, summary, cfg)
    if folds_dir is not None and ensemble.members(folds_dir):
        summary["folds"], summary["ensemble"] = _cross_validation(cfg, folds_dir, data_dir,
                                                                  device, task)

    # Plot data, heat maps, report; the summary last: its presence means a complete run.
    ids = [str(i) for i in cases["source_id"]]
    roc, pr = ev.curves(labels, probs, task.classes)
    table = ev.predictions_table(ids, labels, probs, task.classes, summary)
    outputs.write_plot_data(plots_dir, roc, pr, reliability, table,
                            groups.plot_rows(summary.get("groups", {})))
    if gradcam_dir is not None:
        with atomic_path(gradcam_dir) as tmp:
            tmp.mkdir(parents=True)
            if cfg.gradcam > 0:
                shown = ev.gradcam_cases(labels, probs, task.classes, ids, summary, cfg)
                gradcam.write_maps(model, ckpt["arch"]["name"], images, shown, tmp, device)
                log.info("Grad-CAM: %d heat maps (%d wrong) -> %s", len(shown),
                         sum(not c.correct for c in shown), gradcam_dir)
    links = outputs.report_links(report_path, plots_dir,
                                 gradcam_dir if cfg.gradcam > 0 else None)
    write_text(report_path, ev.render(summary, model=str(model_path),
                                      model_sha256=summary["model_sha256"], plots=links,
                                      reliability=reliability))
    write_json(metrics_path, summary)
    log.info("%s", ev.headline(summary))
    return summary


def _cross_validation(cfg: EvaluateParams, folds_dir: Path, data_dir: Path, device,
                      task) -> tuple[dict, dict]:
    """The fold models scored on their folds and the test split; the ensemble's summary."""
    test_labels, scores = fold_scoring.score_folds(folds_dir, data_dir, cfg.batch_size, device,
                                               task, cfg.tta)
    section, ens = crossval.summarise(tasks.evaluation_of(task).summarise, scores,
                                      test_labels, task.classes, cfg)
    ens["model_sha256"] = ensemble.digest(folds_dir)  # what `medpipe predict` checks
    log.info("ensemble of %d folds, test: ROC AUC %.4f (folds %.4f ± %.4f)", len(scores),
             ens["roc_auc"], section["mean"]["test"]["roc_auc"], section["sd"]["test"]["roc_auc"])
    return section, ens


def main(args) -> None:
    cfg = load_section(args.params, "evaluate", stage="evaluate")
    gpus.pin(cfg.device)  # MEDPIPE_GPUS: a free GPU of its own (medpipe/utils/gpus.py)
    evaluate(cfg, Path(args.model), Path(args.data), Path(args.metrics), Path(args.plots),
             Path(args.report), Path(args.gradcam), Path(args.folds))


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
    return p


if __name__ == "__main__":
    cli.run("evaluate", main, get_args_parser())
