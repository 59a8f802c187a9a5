"""Stage 4, evaluate: score the model on a held-out split.

Reads ``models/model.pt``, ``data/prepared`` and ``params.yaml`` section ``evaluate``;
writes ``metrics/evaluate.json`` (see :mod:`medpipe.evaluation`: accuracy, balanced
accuracy, ROC AUC, sensitivity, specificity, PPV, NPV, F1 overall and per class, at 0.5
and at the threshold chosen on the validation split; 95% bootstrap intervals;
calibration error; for a multi-label store, the same per finding and the mean AUC),
``metrics/report.md`` (the same as a Markdown page), under ``metrics/evaluate/`` the plot
data: ROC (``roc.json``) and precision-recall (``pr.json``) curves, the reliability
diagram (``reliability.json``) and per-image predictions (``predictions.csv``, the
confusion matrices); and under ``metrics/gradcam/`` Grad-CAM heat maps (PNG) of
``evaluate.gradcam`` images (see :mod:`medpipe.gradcam`).

    python -m stages.evaluate --model models/model.pt --data data/prepared \
        --metrics metrics/evaluate.json --plots metrics/evaluate --report metrics/report.md \
        --gradcam metrics/gradcam
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe import (
    PipelineError,
    cli,
    engine,
    evaluation,
    gpus,
    gradcam,
    metrics,
    models,
    report,
    store,
)
from medpipe.fsutil import atomic_path, file_digest, write_json, write_text
from medpipe.params import EvaluateParams, load_section

log = logging.getLogger(__name__)

PLOT_FILES = {  # title in the report -> file under the plots directory
    "ROC curve": "roc.json",
    "Precision-recall curve": "pr.json",
    "Reliability diagram": "reliability.json",
    "Predictions (confusion matrices)": "predictions.csv",
}


def score(model, data_dir: Path, split: str, cfg: EvaluateParams, device, task: str
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and the (memory-mapped) images of one split of the store."""
    part = store.load_split(data_dir, split)
    engine.check_labels(part.labels, task, len(store.read_stats(data_dir)["classes"]),
                        str(store.labels_path(data_dir, split)))
    probs = engine.predict(model, engine.Batches(part, cfg.batch_size, shuffle=False), device,
                           multilabel=task == "multilabel", tta=cfg.tta)
    return np.asarray(part.labels), probs, part.images


def check_match(model_path: Path, ckpt: dict, data_dir: Path, stats: dict) -> None:
    """The model must have been trained for this store: task, classes, size, channels."""
    if models.task_of(ckpt) != models.task_of(stats):
        raise PipelineError(f"{model_path}: a {models.task_of(ckpt)} model, but {data_dir} "
                            f"holds a {models.task_of(stats)} task; retrain the model")
    if ckpt["classes"] != stats["classes"]:
        raise PipelineError(f"{model_path}: trained on classes {ckpt['classes']}, but "
                            f"{data_dir} has {stats['classes']}; retrain the model")
    pre = ckpt["preprocess"]
    if (pre["image_size"], pre["channels"]) != (stats["image_size"], stats["channels"]):
        raise PipelineError(f"{model_path}: expects {pre['channels']}x{pre['image_size']}px "
                            f"images, {data_dir} holds {stats['channels']}x"
                            f"{stats['image_size']}px; retrain the model")


def finding_sets(called: np.ndarray, names: list[str]) -> list[str]:
    """Each row's called findings joined by '|' ('none' for none): a multi-label image's
    "class" in the confusion-matrix plots."""
    return ["|".join(n for n, c in zip(names, row, strict=True) if c) or "none"
            for row in called]


def predictions_table(ids: list[str], labels: np.ndarray, probs: np.ndarray,
                      classes: list[str], summary: dict) -> pd.DataFrame:
    """One row per image: true and predicted class (at 0.5 and at the chosen threshold)
    and the probabilities; multi-label: the finding sets, then per finding its truth,
    probability and call at its threshold."""
    if summary.get("task") != "multilabel":
        threshold = summary["threshold"]["value"]
        pred = pd.DataFrame({"id": ids,
                             "actual": [classes[k] for k in labels],
                             "predicted": [classes[k] for k in metrics.decide(probs)],
                             "predicted_at_threshold": [classes[k] for k in
                                                        metrics.decide(probs, threshold)]})
        for k, name in enumerate(classes):
            pred[f"p_{name}"] = probs[:, k].round(6)
        return pred
    called = probs >= thresholds_of(summary)[None, :]
    pred = pd.DataFrame({"id": ids, "actual": finding_sets(labels == 1, classes),
                         "predicted": finding_sets(probs >= 0.5, classes),
                         "predicted_at_threshold": finding_sets(called, classes)})
    for k, name in enumerate(classes):
        pred[f"true_{name}"] = labels[:, k].astype(np.int64)
        pred[f"p_{name}"] = probs[:, k].round(6)
        pred[f"pred_{name}"] = called[:, k].astype(np.int64)
    return pred


def thresholds_of(summary: dict) -> np.ndarray:
    """A multi-label summary's per-finding thresholds, in finding order."""
    per_label = summary["threshold"]["per_label"]
    return np.array([per_label[name]["value"] for name in summary["findings"]])


def gradcam_cases(labels: np.ndarray, probs: np.ndarray, classes: list[str], ids: list[str],
                  summary: dict, cfg: EvaluateParams) -> list[gradcam.Case]:
    """The seeded sample of images to explain, at the decisions the metrics report."""
    if summary.get("task") == "multilabel":
        return gradcam.multilabel_cases(labels, probs, thresholds_of(summary), classes, ids,
                                        cfg.gradcam, cfg.seed)
    decided = metrics.decide(probs, summary["threshold"]["value"])
    return gradcam.single_label_cases(labels, probs, decided, classes, ids, cfg.gradcam,
                                      cfg.seed)


def evaluate(cfg: EvaluateParams, model_path: Path, data_dir: Path, metrics_path: Path,
             plots_dir: Path, report_path: Path, gradcam_dir: Path | None = None) -> dict:
    """Score ``cfg.split``; write the metrics, the plot data, the report and, with
    ``gradcam_dir``, the Grad-CAM heat maps (the directory always, empty with
    ``evaluate.gradcam: 0``, since DVC expects every declared output)."""
    evaluation.check(cfg)
    device = engine.resolve_device(cfg.device)
    model, ckpt = models.load_checkpoint(model_path, device)
    stats = store.read_stats(data_dir)
    check_match(model_path, ckpt, data_dir, stats)
    task = models.task_of(ckpt)
    multilabel = task == "multilabel"
    classes = ckpt["classes"]
    labels, probs, images = score(model, data_dir, cfg.split, cfg, device, task)
    val_labels = val_probs = None
    if evaluation.needs_validation(cfg, len(classes), multilabel):
        val_labels, val_probs = (score(model, data_dir, "val", cfg, device, task)[:2]
                                 if cfg.split != "val" else (labels, probs))
    summarise = evaluation.summarise_multilabel if multilabel else evaluation.summarise
    summary, reliability = summarise(labels, probs, classes, cfg, val_labels, val_probs)
    digest = file_digest(model_path)
    summary["model_sha256"] = digest
    summary["tta"] = cfg.tta  # predict.py --metrics averages the same views

    manifest = pd.read_csv(data_dir / store.MANIFEST)
    ids = [str(i) for i in manifest.loc[manifest["split"] == cfg.split, "source_id"]]
    pred = predictions_table(ids, labels, probs, classes, summary)
    if multilabel:
        roc, pr = metrics.multilabel_curves(labels, probs, classes)
    else:
        roc, pr = metrics.roc_points(labels, probs, classes), metrics.pr_points(labels, probs,
                                                                                 classes)
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, rows in [("roc.json", roc), ("pr.json", pr),
                           ("reliability.json", [{**r, "perfect": r["mean_probability"]}
                                                 for r in reliability])]:
            (tmp / name).write_text(json.dumps(rows, indent=1) + "\n")
        pred.to_csv(tmp / "predictions.csv", index=False)
    if gradcam_dir is not None:
        with atomic_path(gradcam_dir) as tmp:
            tmp.mkdir(parents=True)
            if cfg.gradcam > 0:
                cases = gradcam_cases(labels, probs, classes, ids, summary, cfg)
                written = gradcam.write_maps(model, ckpt["arch"]["name"], images, cases, tmp,
                                             device)
                log.info("Grad-CAM: %d heat maps (%d wrong) -> %s", len(written),
                         sum(not c.correct for c in cases), gradcam_dir)
    rel = Path(os.path.relpath(plots_dir, report_path.parent))
    plot_links = {title: (rel / name).as_posix() for title, name in PLOT_FILES.items()}
    if gradcam_dir is not None and cfg.gradcam > 0:
        plot_links["Grad-CAM heat maps (PNG)"] = Path(
            os.path.relpath(gradcam_dir, report_path.parent)).as_posix()
    write_text(report_path, report.render(
        summary, model=str(model_path), model_sha256=digest, plots=plot_links,
        reliability=reliability))
    write_json(metrics_path, summary)  # last: its presence means the run completed
    if multilabel:
        log.info("%s: mean ROC AUC %.4f over %d findings  accuracy %.4f  exact match %.4f",
                 cfg.split, summary["roc_auc"], len(classes), summary["accuracy"],
                 summary["exact_match"])
        return summary
    log.info("%s: accuracy %.4f  balanced accuracy %.4f  ROC AUC %.4f", cfg.split,
             summary["accuracy"], summary["balanced_accuracy"], summary["roc_auc"])
    if "at_threshold" in summary:
        at = summary["at_threshold"]
        log.info("%s at threshold %.4f (%s): sensitivity %.4f  specificity %.4f", cfg.split,
                 summary["threshold"]["value"], summary["threshold"]["rule"], at["sensitivity"],
                 at["specificity"])
    return summary


def main(args) -> None:
    cfg = load_section(args.params, "evaluate", stage="evaluate")
    evaluation.check(cfg)
    gpus.pin(cfg.device)  # MEDPIPE_GPUS: a free GPU of its own (medpipe/gpus.py)
    evaluate(cfg, Path(args.model), Path(args.data), Path(args.metrics), Path(args.plots),
             Path(args.report), Path(args.gradcam))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--metrics", default="metrics/evaluate.json", help="metrics JSON to write")
    p.add_argument("--plots", default="metrics/evaluate", help="directory for plot data")
    p.add_argument("--report", default="metrics/report.md", help="Markdown report to write")
    p.add_argument("--gradcam", default="metrics/gradcam",
                   help="directory for the Grad-CAM heat maps (PNG)")
    return p


if __name__ == "__main__":
    cli.run("evaluate", main, get_args_parser())
