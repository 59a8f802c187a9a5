"""Stage 4, evaluate: score the model on a held-out split.

Reads ``models/model.pt``, ``data/prepared`` and ``params.yaml`` section ``evaluate``;
writes ``metrics/evaluate.json`` (accuracy, balanced accuracy, ROC AUC, per-class
precision / recall / specificity / F1) and, under ``metrics/evaluate/``, the ROC curve
(``roc.json``) and per-image predictions (``predictions.csv``, the confusion matrix).

    python -m stages.evaluate --model models/model.pt --data data/prepared \
        --metrics metrics/evaluate.json --plots metrics/evaluate
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from medpipe import PipelineError, cli, engine, metrics, models, store
from medpipe.fsutil import atomic_path, write_json
from medpipe.params import EvaluateParams, load_section, require

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateParams, model_path: Path, data_dir: Path, metrics_path: Path,
             plots_dir: Path) -> dict:
    require(cfg.batch_size >= 1, "evaluate", "batch_size",
            f"must be at least 1, got {cfg.batch_size}", "evaluate")
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
    split = store.load_split(data_dir, cfg.split)
    batches = engine.Batches(split, cfg.batch_size, shuffle=False)
    probs = engine.predict(model, batches, device)
    classes = ckpt["classes"]
    report = {"split": cfg.split, **metrics.classification_report(split.labels, probs, classes)}

    manifest = pd.read_csv(data_dir / store.MANIFEST)
    ids = manifest.loc[manifest["split"] == cfg.split, "source_id"].tolist()
    pred = pd.DataFrame({"id": ids,
                         "actual": [classes[k] for k in split.labels],
                         "predicted": [classes[k] for k in probs.argmax(1)]})
    for k, name in enumerate(classes):
        pred[f"p_{name}"] = probs[:, k].round(6)
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "roc.json").write_text(
            json.dumps(metrics.roc_points(split.labels, probs, classes), indent=1) + "\n")
        pred.to_csv(tmp / "predictions.csv", index=False)
    write_json(metrics_path, report)
    log.info("%s: accuracy %.4f  balanced accuracy %.4f  ROC AUC %.4f", cfg.split,
             report["accuracy"], report["balanced_accuracy"], report["roc_auc"])
    return report


def main(args) -> None:
    cfg = load_section(args.params, "evaluate", stage="evaluate")
    evaluate(cfg, Path(args.model), Path(args.data), Path(args.metrics), Path(args.plots))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="models/model.pt", help="model file (train stage)")
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--metrics", default="metrics/evaluate.json", help="metrics JSON to write")
    p.add_argument("--plots", default="metrics/evaluate", help="directory for plot data")
    return p


if __name__ == "__main__":
    cli.run("evaluate", main, get_args_parser())
