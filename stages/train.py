"""Stage 3, train: fit a model on the array store; keep the best epoch.

Reads ``data/prepared`` and ``params.yaml`` section ``train``; writes the model
(``models/model.pt``: weights, classes, preprocessing and params, loadable with
``torch.load(weights_only=True)``), ``metrics/train.json`` (best epoch and its validation
metrics, time, device) and per-epoch curves through DVCLive under ``metrics/train``.

    python -m stages.train --data data/prepared --model models/model.pt \
        --metrics metrics/train.json --live metrics/train
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from medpipe import cli, engine, models, store
from medpipe.fsutil import clean_stale, write_json
from medpipe.params import TrainParams, load_section, require

log = logging.getLogger(__name__)


def check(cfg: TrainParams) -> None:
    """Value checks the types alone cannot express, before any work is done."""
    models.check_model_name(cfg.model)
    require(cfg.lr > 0, "train", "lr", f"must be positive, got {cfg.lr}", "train")
    require(cfg.epochs >= 1, "train", "epochs", f"must be at least 1, got {cfg.epochs}", "train")
    require(cfg.batch_size >= 1, "train", "batch_size",
            f"must be at least 1, got {cfg.batch_size}", "train")
    require(0.0 <= cfg.dropout < 1.0, "train", "dropout",
            f"must be in [0, 1), got {cfg.dropout}", "train")
    require(cfg.width_mult > 0, "train", "width_mult",
            f"must be positive, got {cfg.width_mult}", "train")
    require(0.0 <= cfg.momentum < 1.0, "train", "momentum",
            f"must be in [0, 1), got {cfg.momentum}", "train")
    require(cfg.weight_decay >= 0, "train", "weight_decay",
            f"must be non-negative, got {cfg.weight_decay}", "train")


def train(cfg: TrainParams, data_dir: Path, model_path: Path, metrics_path: Path,
          on_epoch=None) -> dict:
    """Train on the store at ``data_dir``; write the model and the train metrics."""
    check(cfg)
    engine.seed_everything(cfg.seed)
    device = engine.resolve_device(cfg.device)
    stats = store.read_stats(data_dir)
    arch = models.make_arch(cfg, stats)
    model = models.build_model(arch, pretrained=cfg.pretrained,
                               freeze_backbone=cfg.freeze_backbone)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s (%d parameters) on %s", cfg.model, n_params, device)
    result = engine.fit(model, store.load_split(data_dir, "train"),
                        store.load_split(data_dir, "val"), cfg, device, on_epoch=on_epoch)
    summary = {
        "best_epoch": result.best_epoch,
        "epochs": cfg.epochs,
        **{k: round(v, 6) for k, v in result.best.items()},
        "model": cfg.model,
        "parameters": n_params,
        "device": device.type,
        "train_seconds": round(result.seconds, 2),
        "train_images_per_second": round(result.images_per_second, 1),
    }
    models.save_checkpoint(model_path, model, arch=arch, classes=stats["classes"],
                           params=dataclasses.asdict(cfg),
                           info={"best_epoch": result.best_epoch, "best": result.best})
    write_json(metrics_path, summary)  # last: its presence means the run completed
    return summary


def main(args) -> None:
    cfg = load_section(args.params, "train", stage="train")
    check(cfg)
    from dvclive import Live  # DVC lives in the stage shell only; the engine runs without it

    for path in (Path(args.model), Path(args.metrics)):
        path.unlink(missing_ok=True)  # no stale output survives a failed run
        clean_stale(path)
    with Live(dir=args.live, dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            live.step = epoch
            for name, value in metrics.items():
                split, _, metric = name.partition("_")
                live.log_metric(f"{split}/{metric}", value, plot=True)
            live.next_step()

        train(cfg, Path(args.data), Path(args.model), Path(args.metrics), on_epoch=on_epoch)


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--model", default="models/model.pt", help="model file to write")
    p.add_argument("--metrics", default="metrics/train.json", help="train metrics JSON")
    p.add_argument("--live", default="metrics/train", help="DVCLive directory (curves)")
    return p


if __name__ == "__main__":
    cli.run("train", main, get_args_parser())
