"""Train params and small trained models for tests: the committed train section with
CPU-sized values, and a model fitted on a store and saved as the train stage saves it."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from medpipe.data import store
from medpipe.models import architectures, checkpoint
from medpipe.params.loading import parse_section
from medpipe.training import loop
from medpipe.utils import seeding

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def train_cfg(**changes):
    """The committed train section, 2 epochs of batch 16 on the CPU at a constant rate,
    then ``changes``."""
    return parse_section("train", {**PARAMS["train"], "batch_size": 16, "epochs": 2,
                                   "schedule": "constant", "warmup_epochs": 0,
                                   "device": "cpu", **changes}, stage="train")


def aug_cfg():
    return parse_section("augment", PARAMS["augment"], stage="train")


def fit_and_save(store_dir: Path, model_path: Path, cfg, classes: list[str],
                 seed: int = 0) -> None:
    """A model fitted on ``store_dir``'s train and val splits, saved at ``model_path``."""
    arch = architectures.make_arch(cfg, store.read_stats(store_dir))
    seeding.seed_everything(seed)
    model = architectures.build_model(arch)
    loop.fit(model, store.load_split(store_dir, "train"), store.load_split(store_dir, "val"),
             cfg, torch.device("cpu"))
    checkpoint.save_checkpoint(model_path, model.eval(), arch=arch, classes=classes,
                               params={}, info={})
