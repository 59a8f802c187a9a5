"""A model scored on a held-out split of the store, and everything the evaluate stage
writes of it: the metrics, the plot data, the report, the Grad-CAM heat maps, and with
fold models the cross-validation figures and the fold ensemble's; with ``page_paths``,
the HTML report and its figures (:mod:`medpipe.evaluation.page`). The evaluate stage
runs it on the store's test split, the external stage on another site's store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medpipe.data import store
from medpipe.evaluation import crossval, gradcam, groups, outputs, page, tasks
from medpipe.evaluation.headline import headline
from medpipe.inference import crossval as fold_scoring
from medpipe.inference import ensemble
from medpipe.inference.predictor import score_split
from medpipe.models import checkpoint
from medpipe.params.loading import validate
from medpipe.params.sections import EvaluateParams
from medpipe.utils import devices
from medpipe.utils.files import atomic_path, file_digest, write_metrics, write_text

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateParams, model_path: Path, data_dir: Path, metrics_path: Path,
             plots_dir: Path, report_path: Path, gradcam_dir: Path | None = None,
             folds_dir: Path | None = None, page_paths: page.PagePaths | None = None) -> dict:
    """Score ``cfg.split``; write the metrics (the headline figures to ``metrics_path``,
    the whole summary to its detail file), the plot data, the report and, with
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
    summary, reliability = ev.summarise(labels, probs, task, cfg, val_labels, val_probs)
    summary["model_sha256"] = file_digest(model_path)
    summary["tta"] = cfg.tta  # `medpipe predict --metrics` averages the same views
    manifest = pd.read_csv(data_dir / store.MANIFEST)
    cases = manifest[manifest["split"] == cfg.split].reset_index(drop=True)
    if cfg.groups:
        groups.check_columns(manifest, cfg.groups, str(data_dir / store.MANIFEST))
        summary["groups"] = groups.subgroups(ev.group_figures, labels, probs, task, cases,
                                             summary, cfg)
    if folds_dir is not None and ensemble.members(folds_dir):
        summary["folds"], summary["ensemble"] = _cross_validation(cfg, folds_dir, data_dir,
                                                                  device, task)

    # Plot data, heat maps, report; the summary last: its presence means a complete run.
    ids = [str(i) for i in cases["source_id"]]
    roc, pr = ev.curves(labels, probs, task)
    table = ev.predictions_table(ids, labels, probs, task, summary)
    outputs.write_plot_data(plots_dir, roc, pr, reliability, table,
                            groups.plot_rows(summary.get("groups", {})))
    if gradcam_dir is not None:
        cases_shown = ev.gradcam_cases(labels, probs, task, ids, summary, cfg) \
            if cfg.gradcam > 0 else []
        _write_maps(model, ckpt["arch"]["name"], images, cases_shown, gradcam_dir, device)
    maps = gradcam_dir if cfg.gradcam > 0 else None
    links = outputs.report_links(report_path, plots_dir, maps)
    text = ev.render(summary, model=str(model_path), model_sha256=summary["model_sha256"],
                     plots=links, reliability=reliability)
    if page_paths is not None:
        results = page.Results(summary, task.classes, reliability, roc, pr, table, text, maps)
        text += page.write(page_paths, results, report_path)
    write_text(report_path, text)
    write_metrics(metrics_path, headline(summary, task), summary)
    log.info("%s", ev.headline(summary))
    return summary


def _write_maps(model, arch: str, images, shown: list, gradcam_dir: Path, device) -> None:
    """The Grad-CAM heat maps of the ``shown`` cases; the folder always, empty without."""
    with atomic_path(gradcam_dir) as tmp:
        tmp.mkdir(parents=True)
        if shown:
            gradcam.write_maps(model, arch, images, shown, tmp, device)
            log.info("Grad-CAM: %d heat maps (%d wrong) -> %s", len(shown),
                     sum(not c.correct for c in shown), gradcam_dir)


def _cross_validation(cfg: EvaluateParams, folds_dir: Path, data_dir: Path, device,
                      task) -> tuple[dict, dict]:
    """The fold models scored on their folds and the test split; the ensemble's summary."""
    test_labels, scores = fold_scoring.score_folds(folds_dir, data_dir, cfg.batch_size, device,
                                               task, cfg.tta)
    section, ens = crossval.summarise(tasks.evaluation_of(task).summarise, scores,
                                      test_labels, task, cfg)
    ens["model_sha256"] = ensemble.digest(folds_dir)  # what `medpipe predict` checks
    log.info("ensemble of %d folds, test: ROC AUC %.4f (folds %.4f ± %.4f)", len(scores),
             ens["roc_auc"], section["mean"]["test"]["roc_auc"], section["sd"]["test"]["roc_auc"])
    return section, ens
