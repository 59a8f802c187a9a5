"""Stage crossval: a model per cross-validation fold, for the fold ensemble.

Reads ``data/prepared`` (its folds: ``prepare.folds``), ``models/pretrained``,
``data/plan.yaml`` (the plan, applied as the train stage applies it) and ``params.yaml``
sections ``train`` and ``augment``; writes ``models/folds/fold_<k>.pt``
(fold k's model: trained on the pool outside fold k, its best epoch chosen on fold k) and
``metrics/crossval.json`` (validation figures: mean, sample sd; per fold in its detail). Without
folds it writes an empty ``models/folds``. The folder is a persistent DVC output: a run
killed during fold k keeps the finished folds and resumes fold k from its last epoch;
folds whose model matches the params and data are not trained again. ``--fold k`` trains
fold k alone, so folds can train in parallel, one process per GPU (docs/evidence.md).

    python -m stages.crossval --data data/prepared --models models/folds \
        --metrics metrics/crossval.json --weights models/pretrained --plan data/plan.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path

from medpipe import PipelineError
from medpipe.data import store
from medpipe.params.loading import load_section, validate
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.planning import recipe as plans
from medpipe.training import folds
from medpipe.utils import cli, gpus, progress
from medpipe.utils.files import clean_stale, write_metrics

# Without folds (the default) the stage writes its empty outputs without importing torch,
# scikit-learn or the training code: those imports are inside the functions that train.

log = logging.getLogger(__name__)


def crossval(cfg: TrainParams, aug: AugmentParams, data_dir: Path, models_dir: Path,
             metrics_path: Path | None, weights_dir: Path | None = None,
             only: int | None = None) -> dict:
    """Train every fold's model that is missing or stale (``only``: fold ``only`` alone);
    write the cross-validation metrics from the fold models there are."""
    validate(cfg, stage="crossval")
    validate(aug, stage="crossval")
    k_folds = int(store.read_stats(data_dir).get("folds", 0))
    models_dir.mkdir(parents=True, exist_ok=True)
    folds.remove_stale(models_dir, k_folds)
    wanted = range(k_folds) if only is None else [only]
    if only is not None and not 0 <= only < k_folds:
        raise PipelineError(f"--fold {only}: the store has {k_folds} folds (prepare.folds); "
                            f"give 0 to {k_folds - 1}")
    if not wanted:
        return _write(metrics_path, folds.summarise(models_dir, k_folds))
    from medpipe.training import state

    base = state.fingerprint(cfg, aug, data_dir)
    for k in progress.track(wanted, "crossval: folds", unit="fold"):
        fingerprint = f"{base} fold {k}"
        if folds.is_current(folds.fold_path(models_dir, k), fingerprint):
            log.info("fold %d of %d: its model is current", k + 1, k_folds)
            continue
        _train_fold(cfg, aug, data_dir, models_dir, k, fingerprint, weights_dir)
    return _write(metrics_path, folds.summarise(models_dir, k_folds))


def _write(metrics_path: Path | None, summary: dict) -> dict:
    if metrics_path is not None:
        write_metrics(metrics_path, folds.headline(summary), summary)
    return summary


def _train_fold(cfg: TrainParams, aug: AugmentParams, data_dir: Path, models_dir: Path,
                k: int, fingerprint: str, weights_dir: Path | None) -> None:
    from medpipe.data.folds import load_fold
    from medpipe.training import run, state
    from medpipe.utils import devices, seeding

    log.info("fold %d: training on the pool outside it", k + 1)
    seeding.seed_everything(cfg.seed + k, cfg.deterministic)  # each fold its own draws
    device = devices.resolve_device(cfg.device)
    stats = store.read_stats(data_dir)
    train, val = load_fold(data_dir, k)
    state_path = models_dir / f"fold_{k}.state.pt"
    run.train_model(cfg, aug, stats, train, val, data_dir, device, weights_dir=weights_dir,
                    resume=state.Resume(state_path, fingerprint),
                    save_to=folds.fold_path(models_dir, k), fold=k, folds=stats["folds"],
                    fingerprint=fingerprint, record_seconds=True)
    state_path.unlink(missing_ok=True)
    clean_stale(state_path)


def main(args) -> None:
    cfg = load_section(args.params, "train", stage="crossval")
    aug = load_section(args.params, "augment", stage="crossval")
    if args.plan:  # the folds train as the single model does: the plan under params.yaml
        applied = plans.apply(plans.read(Path(args.plan)), cfg, aug, where=args.plan)
        cfg, aug = applied.train, applied.augment
    gpus.pin(cfg.device)  # MEDPIPE_GPUS: a free GPU of its own
    crossval(cfg, aug, Path(args.data), Path(args.models),
             None if args.fold is not None else Path(args.metrics), Path(args.weights),
             args.fold)


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--models", default="models/folds", help="folder of the fold models")
    p.add_argument("--metrics", default="metrics/crossval.json", help="metrics JSON")
    p.add_argument("--weights", default="models/pretrained",
                   help="ImageNet weights directory (pretrained stage), read if train.pretrained")
    p.add_argument("--plan", default=None,
                   help="the plan stage's recipe (data/plan.yaml), applied as train applies it")
    p.add_argument("--fold", type=int, default=None,
                   help="train this fold only (the metrics are left to a run of every fold)")
    return p


if __name__ == "__main__":
    cli.run("crossval", main, get_args_parser())
