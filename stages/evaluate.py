"""Stage 4, evaluate: score the model on a held-out split.

Reads ``models/model.pt``, ``data/prepared`` and ``params.yaml`` section ``evaluate``;
writes ``metrics/evaluate.json`` (see :mod:`medpipe.evaluation`: accuracy, balanced
accuracy, ROC AUC, sensitivity, specificity, PPV, NPV, F1 overall and per class, at 0.5
and at the threshold chosen on the validation split; 95% bootstrap intervals;
calibration error), ``metrics/report.md`` (the same as a Markdown page) and, under
``metrics/evaluate/``, the plot data: ROC (``roc.json``) and precision-recall
(``pr.json``) curves, the reliability diagram (``reliability.json``) and per-image
predictions (``predictions.csv``, the confusion matrices).

    python -m stages.evaluate --model models/model.pt --data data/prepared \
        --metrics metrics/evaluate.json --plots metrics/evaluate --report metrics/report.md
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe import PipelineError, cli, engine, evaluation, gpus, metrics, models, report, store
from medpipe.fsutil import atomic_path, file_digest, write_json, write_text
from medpipe.params import EvaluateParams, load_section

log = logging.getLogger(__name__)

PLOT_FILES = {  # title in the report -> file under the plots directory
    "ROC curve": "roc.json",
    "Precision-recall curve": "pr.json",
    "Reliability diagram": "reliability.json",
    "Predictions (confusion matrices)": "predictions.csv",
}



def score(model, data_dir: Path, split: str, cfg: EvaluateParams, device) -> tuple:
    """Labels and class probabilities of one split of the store."""
    part = store.load_split(data_dir, split)
    probs = engine.predict(model, engine.Batches(part, cfg.batch_size, shuffle=False), device)
    return np.asarray(part.labels), probs


def evaluate(cfg: EvaluateParams, model_path: Path, data_dir: Path, metrics_path: Path,
             plots_dir: Path, report_path: Path) -> dict:
    """Score ``cfg.split``; write the metrics, the plot data and the report."""
    evaluation.check(cfg)
    device = engine.resolve_device(cfg.device)
    model, ckpt = models.load_checkpoint(model_path, device)
    stats = store.read_stats(data_dir)
    if ckpt["classes"] != stats["classes"]:
        raise PipelineError(f"{model_path}: trained on classes {ckpt['classes']}, but "
                            f"{data_dir} has {stats['classes']}; retrain the model")
    pre = ckpt["preprocess"]
    if (pre["image_size"], pre["channels"]) != (stats["image_size"], stats["channels"]):
        raise PipelineError(f"{model_path}: expects {pre['channels']}x{pre['image_size']}px "
                            f"images, {data_dir} holds {stats['channels']}x"
                            f"{stats['image_size']}px; retrain the model")
    classes = ckpt["classes"]
    labels, probs = score(model, data_dir, cfg.split, cfg, device)
    val_labels = val_probs = None
    if evaluation.needs_validation(cfg, len(classes)):
        val_labels, val_probs = (score(model, data_dir, "val", cfg, device)
                                 if cfg.split != "val" else (labels, probs))
    summary, reliability = evaluation.summarise(labels, probs, classes, cfg,
                                                val_labels, val_probs)
    digest = file_digest(model_path)
    summary["model_sha256"] = digest

    manifest = pd.read_csv(data_dir / store.MANIFEST)
    ids = manifest.loc[manifest["split"] == cfg.split, "source_id"].tolist()
    threshold = summary["threshold"]["value"]
    pred = pd.DataFrame({"id": ids,
                         "actual": [classes[k] for k in labels],
                         "predicted": [classes[k] for k in metrics.decide(probs)],
                         "predicted_at_threshold": [classes[k] for k in
                                                    metrics.decide(probs, threshold)]})
    for k, name in enumerate(classes):
        pred[f"p_{name}"] = probs[:, k].round(6)
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, rows in [("roc.json", metrics.roc_points(labels, probs, classes)),
                           ("pr.json", metrics.pr_points(labels, probs, classes)),
                           ("reliability.json", [{**r, "perfect": r["mean_probability"]}
                                                 for r in reliability])]:
            (tmp / name).write_text(json.dumps(rows, indent=1) + "\n")
        pred.to_csv(tmp / "predictions.csv", index=False)
    rel = Path(os.path.relpath(plots_dir, report_path.parent))
    write_text(report_path, report.render(
        summary, model=str(model_path), model_sha256=digest,
        plots={title: (rel / name).as_posix() for title, name in PLOT_FILES.items()},
        reliability=reliability))
    write_json(metrics_path, summary)  # last: its presence means the run completed
    log.info("%s: accuracy %.4f  balanced accuracy %.4f  ROC AUC %.4f", cfg.split,
             summary["accuracy"], summary["balanced_accuracy"], summary["roc_auc"])
    if "at_threshold" in summary:
        at = summary["at_threshold"]
        log.info("%s at threshold %.4f (%s): sensitivity %.4f  specificity %.4f", cfg.split,
                 threshold, summary["threshold"]["rule"], at["sensitivity"], at["specificity"])
    return summary


def main(args) -> None:
    cfg = load_section(args.params, "evaluate", stage="evaluate")
    evaluation.check(cfg)
    gpus.pin(cfg.device)  # MEDPIPE_GPUS: a free GPU of its own (medpipe/gpus.py)
    evaluate(cfg, Path(args.model), Path(args.data), Path(args.metrics), Path(args.plots),
             Path(args.report))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--metrics", default="metrics/evaluate.json", help="metrics JSON to write")
    p.add_argument("--plots", default="metrics/evaluate", help="directory for plot data")
    p.add_argument("--report", default="metrics/report.md", help="Markdown report to write")
    return p


if __name__ == "__main__":
    cli.run("evaluate", main, get_args_parser())
