"""Stage 3, train: fit a model on the array store; keep the best epoch.

Reads ``data/prepared``, ``models/pretrained`` (ImageNet weights, when
``train.pretrained``) and ``params.yaml`` sections ``train`` and ``augment``; writes the
model (``models/model.pt``: weights, task, classes, preprocessing and params, loadable
with ``torch.load(weights_only=True)``), ``metrics/train.json`` (best epoch and its
validation metrics; ``metrics/train_detail.json`` adds time and device), per-epoch curves
through DVCLive under ``metrics/train`` and a preview of augmented training images
(``metrics/augment_preview.png``). ``models/train_state.pt`` holds the state of the last
finished epoch while it runs: a killed run resumes from it on the next ``dvc repro`` (it
is not a DVC output, since DVC deletes outputs before rerunning a stage). The task
(:mod:`medpipe.task`) sets the loss: cross-entropy, or one per finding. ``data/plan.yaml``
(the plan stage's recipe; empty unless ``plan.budget_minutes`` is set) fills the train and
augment keys left at their defaults (:func:`medpipe.planning.recipe.apply`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from medpipe.data import store
from medpipe.params.loading import load_section, validate
from medpipe.params.sections import AugmentParams, TrainParams
from medpipe.planning import recipe as plans
from medpipe.training import curves, distributed, run, state
from medpipe.training.augment import preview
from medpipe.utils import cli, devices, gpus, seeding
from medpipe.utils.files import atomic_path, clean_stale, detail_path, write_metrics

log = logging.getLogger(__name__)


def train(cfg: TrainParams, aug: AugmentParams, data_dir: Path, model_path: Path,
          metrics_path: Path, preview_path: Path | None = None, on_epoch=None,
          state_path: Path | None = None, weights_dir: Path | None = None,
          plan: plans.Applied | None = None) -> dict:
    """Train on the store at ``data_dir``; write the model and the train metrics.

    ``weights_dir``: the ``pretrained`` stage's output, read when ``cfg.pretrained``.
    With ``state_path``, training state is saved there after every epoch and a killed
    run resumes from it (see ``loop.fit``); it is removed once the model is written.
    ``plan``: the plan as applied to ``cfg`` and ``aug``, for its record."""
    validate(cfg, stage="train")
    validate(aug, stage="train")
    seeding.seed_everything(cfg.seed, cfg.deterministic)
    device = devices.resolve_device(cfg.device)
    dist = distributed.DistInfo()
    if distributed.under_torchrun():
        dist, device = distributed.init(device)
    try:
        return _train(cfg, aug, data_dir, model_path, metrics_path, preview_path, on_epoch,
                      state_path, weights_dir, device, dist, plan or plans.Applied(cfg, aug))
    finally:
        distributed.shutdown()


def _train(cfg: TrainParams, aug: AugmentParams, data_dir: Path, model_path: Path,
           metrics_path: Path, preview_path: Path | None, on_epoch, state_path: Path | None,
           weights_dir: Path | None, device, dist: distributed.DistInfo,
           plan: plans.Applied) -> dict:
    stats = store.read_stats(data_dir)
    train_split, val_split = (store.load_split(data_dir, name) for name in ("train", "val"))
    if preview_path is not None and dist.main:
        with atomic_path(preview_path) as tmp:
            preview(train_split.images[:8], aug, seed=cfg.seed).save(tmp, format="PNG")
    resume = (state.Resume(state_path, state.fingerprint(cfg, aug, data_dir))
              if state_path is not None else None)
    trained = run.train_model(cfg, aug, stats, train_split, val_split, data_dir, device, dist,
                              weights_dir=weights_dir, on_epoch=on_epoch, resume=resume,
                              save_to=model_path if dist.main else None)
    summary = {**run.summary_of(trained, cfg, device, dist.world), **plan.summary()}
    if not dist.main:
        return summary  # rank 0 writes every file
    write_metrics(metrics_path, run.headline_of(summary), summary)  # last: the run completed
    if state_path is not None:
        state_path.unlink(missing_ok=True)
        clean_stale(state_path)  # a temporary a killed earlier save left behind
    return summary


def main(args) -> None:
    cfg = load_section(args.params, "train", stage="train")
    aug = load_section(args.params, "augment", stage="train")
    plan = plans.Applied(cfg, aug)
    if args.plan:
        plan = plans.apply(plans.read(Path(args.plan)), cfg, aug, where=args.plan)
        cfg, aug = plan.train, plan.augment
    gpus.pin(cfg.device, count=cfg.nproc)  # MEDPIPE_GPUS: a free GPU per process
    if cfg.nproc > 1 and not distributed.under_torchrun():
        argv = [part for key, value in vars(args).items() if value is not None
                for part in (f"--{key}", str(value))]
        sys.exit(distributed.relaunch(cfg.nproc, "stages.train", argv))
    paths = dict(state_path=Path(args.state), weights_dir=Path(args.weights), plan=plan)
    outputs = Path(args.data), Path(args.model), Path(args.metrics), Path(args.preview)
    if int(os.environ.get("RANK", "0")) != 0:  # ranks > 0 compute; rank 0 logs and writes
        logging.getLogger().setLevel(logging.WARNING)
        train(cfg, aug, *outputs, **paths)
        return
    from dvclive import Live  # DVC lives in the stage shell only; the loop runs without it

    for path in (*outputs[1:], detail_path(args.metrics)):
        path.unlink(missing_ok=True)  # no stale output survives a failed run
        clean_stale(path)
    with Live(dir=args.live, dvcyaml=False, save_dvc_exp=False, report=None) as live:
        train(cfg, aug, *outputs, on_epoch=curves.logger(live), **paths)


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="data/prepared", help="array store (prepare stage)")
    p.add_argument("--model", default="models/model.pt", help="model file to write")
    p.add_argument("--metrics", default="metrics/train.json", help="train metrics JSON")
    p.add_argument("--live", default="metrics/train", help="DVCLive directory (curves)")
    p.add_argument("--preview", default="metrics/augment_preview.png",
                   help="PNG grid of augmented training images")
    p.add_argument("--weights", default="models/pretrained",
                   help="ImageNet weights directory (pretrained stage), read if train.pretrained")
    p.add_argument("--plan", default=None,
                   help="the plan stage's recipe (data/plan.yaml), laid over default keys")
    p.add_argument("--state", default="models/train_state.pt",
                   help="per-epoch training state for resuming a killed run (not a DVC output)")
    return p


if __name__ == "__main__":
    cli.run("train", main, get_args_parser())
