"""Stage plan: a training configuration validated on the data within a compute budget.

Reads ``data/raw`` and ``params.yaml`` sections ``plan``, ``prepare`` (the split, channels
and the side asked for) and ``train.device``; before the store exists, prepares its own
train and val images (the test split's are never decoded), times a few training steps of
each candidate model on that device, trains short trials of candidate configurations and
ranks them on the validation split by successive halving, and writes the winner as a
recipe, ``data/plan.yaml``, every trial and choice with its reason to
``metrics/plan_detail.json``, and the budget, the trials run and the winner's validation
figures to ``metrics/plan.json``. The prepare stage makes the store at the planned side
and the train stage lays the recipe over the train and augment keys left at their
defaults. With ``plan.budget_minutes: null`` (the default) the plan is empty and the
pipeline follows params.yaml. See docs/planning.md.

    python -m stages.plan --raw data/raw --out data/plan.yaml --metrics metrics/plan.json
"""

from __future__ import annotations

import logging
from pathlib import Path

from medpipe.params.loading import load_section, validate
from medpipe.params.sections import PlanParams, PrepareParams
from medpipe.planning import recipe
from medpipe.utils import cli
from medpipe.utils.files import write_metrics

log = logging.getLogger(__name__)


def plan(cfg: PlanParams, prepare_cfg: PrepareParams, device_name: str, raw_dir: Path,
         out_path: Path, metrics_path: Path) -> dict:
    """Plan for the raw dataset at ``raw_dir`` as ``prepare_cfg`` prepares it; write the
    recipe and the report; return the report."""
    validate(cfg, stage="plan")
    validate(prepare_cfg, stage="plan")
    if cfg.budget_minutes is None:  # the default: done without importing torch
        sections, report = {}, {"planned": False,
                                "reason": "plan.budget_minutes is null: train follows "
                                          "params.yaml"}
        header = "No plan: plan.budget_minutes is null, so train follows params.yaml."
    else:
        from medpipe.planning import planner
        from medpipe.utils import devices

        device = devices.resolve_device(device_name)
        sections, report = planner.make_plan(raw_dir, prepare_cfg, cfg.budget_minutes,
                                             device, cfg.timed_steps)
        header = (f"Planned for {raw_dir} within {cfg.budget_minutes} min of training on "
                  f"{device.type} (stages/plan.py); the reasons: {metrics_path}.\n"
                  "The prepare and train stages apply it to every key params.yaml leaves "
                  "at its default.")
        log.info("plan: %s, trial %d of %d", report["chosen"], report["winner"],
                 len(report["trials"]))
    recipe.write(out_path, sections, header)
    write_metrics(metrics_path, headline(report), report)
    return report


def headline(report: dict) -> dict[str, float]:
    """What ``metrics/plan.json`` keeps of the report: whether there is a plan (1 or 0)
    and, with one, its budget, the configurations and trials, and the winner's figures."""
    if not report["planned"]:
        return {"planned": 0}
    winner = next(t for t in report["trials"] if t["winner"])
    return {"planned": 1, "budget_minutes": report["budget_minutes"],
            "configurations": report["search"]["configurations"],
            "trials": len(report["trials"]),
            **{f"winner_{k}": winner[k] for k in ("val_auc", "val_balanced_accuracy", "score")}}


def main(args) -> None:
    cfg = load_section(args.params, "plan", stage="plan")
    prepare_cfg = load_section(args.params, "prepare", stage="plan")
    device = load_section(args.params, "train", stage="plan").device
    plan(cfg, prepare_cfg, device, Path(args.raw), Path(args.out), Path(args.metrics))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--raw", default="data/raw", help="raw dataset (download stage)")
    p.add_argument("--out", default="data/plan.yaml", help="the planned recipe to write")
    p.add_argument("--metrics", default="metrics/plan.json", help="the plan's report")
    return p


if __name__ == "__main__":
    cli.run("plan", main, get_args_parser())
