"""The training curves: each epoch's figures as DVCLive's train/* and val/* metrics.

The train stage opens DVCLive and hands its ``Live`` here; the training loop itself never
imports DVC.
"""

from __future__ import annotations


def logger(live):
    """An ``on_epoch(epoch, metrics)`` that logs each epoch's train_* and val_* metrics as
    DVCLive's train/* and val/* curves."""

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        live.step = epoch
        for name, value in metrics.items():
            split, _, metric = name.partition("_")
            live.log_metric(f"{split}/{metric}", value, plot=True)
        live.next_step()

    return on_epoch
