"""Benchmark: the size of the evaluation report (``metrics/report.html`` and its figures)
and the time to build it.

Each run works in a scratch folder with the commands of ``dvc.yaml``: download, prepare,
plan, pretrained, train and crossval as subprocesses, then the evaluate stage in this
process, timing the whole stage and the part that draws the figures and writes the page
(:func:`medpipe.evaluation.page.write`). Two runs:

- ``default``: the committed params.yaml (synthetic data, 1,000 images per class, 64 px,
  1,000 bootstrap resamples, 8 Grad-CAM maps), trained for ``--epochs`` on the CPU
  (one of them warm-up);
- ``folds+groups``: a CSV dataset of two sites (as ``bench/subgroups.py`` makes it,
  ``--per-class`` images per class and site), ``prepare.folds: 3`` (three fold models and
  their ensemble) and ``evaluate.groups: [site]``.

The report's size and build time depend on what it shows (the figures, the heat maps,
the subgroups and folds), not on how well the model learnt, hence few epochs.

    uv run python bench/report.py
    uv run python bench/report.py --epochs 3 --per-class 250 --keep /tmp/reports
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.subgroups import make_sites
from medpipe.evaluation import page
from stages import evaluate as evaluate_stage

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ("download", "prepare", "plan", "pretrained", "train", "crossval")


def command(stage: str) -> list[str]:
    """The stage's command in dvc.yaml, as an argument list."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return shlex.split(stages[stage]["cmd"])


def params(epochs: int, **sections: dict) -> dict:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["train"].update(epochs=epochs, warmup_epochs=1, device="cpu")
    doc["evaluate"]["device"] = "cpu"
    for name, values in sections.items():
        doc[name].update(values)
    return doc


def run(name: str, doc: dict, work: Path) -> dict:
    """The pipeline up to evaluate in ``work``, then evaluate timed; the report's figures."""
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for stage in BEFORE:
        argv = command(stage)
        subprocess.run([sys.executable, *argv[1:]], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    seconds: list[float] = []
    write = page.write

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return write(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    args = evaluate_stage.get_args_parser().parse_args(command("evaluate")[3:])
    here = Path.cwd()
    os.chdir(work)
    page.write = timed
    try:
        start = time.perf_counter()
        evaluate_stage.main(args)
        stage_seconds = time.perf_counter() - start
    finally:
        page.write = write
        os.chdir(here)
    html = work / "metrics/report.html"
    figures = sorted((work / "metrics/report_figures").glob("*.png"))
    return {"run": name, "html_bytes": html.stat().st_size,
            "images": html.read_text().count("<img "),
            "figure_files": len(figures), "figure_bytes": sum(f.stat().st_size for f in figures),
            "page_seconds": seconds[0], "stage_seconds": stage_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per-class", type=int, default=250,
                   help="folds+groups: images per class and site")
    p.add_argument("--keep", type=Path, default=None,
                   help="copy each run's report.html (and report_figures/) into this folder")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="medpipe-report-") as tmp:
        tmp = Path(tmp)
        rows.append(run("default", params(args.epochs), tmp / "default"))
        data = make_sites(tmp / "sites", args.per_class, degrade_b=True)
        rows.append(run("folds+groups", params(
            args.epochs, data={"source": "csv", "path": str(data), "name": "labels.csv"},
            prepare={"folds": 3, "image_size": 64},
            evaluate={"groups": ["site"]}), tmp / "folds"))
        if args.keep:
            for row, folder in zip(rows, ("default", "folds"), strict=True):
                dest = args.keep / row["run"]
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                shutil.copy2(tmp / folder / "metrics/report.html", dest)
                shutil.copytree(tmp / folder / "metrics/report_figures",
                                dest / "report_figures")
    print(f"{'run':<14} {'report.html':>12} {'images':>7} {'figures (PNG)':>16} "
          f"{'page s':>7} {'evaluate s':>11}")
    for r in rows:
        print(f"{r['run']:<14} {r['html_bytes'] / 1024:>9.0f} KiB {r['images']:>7} "
              f"{r['figure_files']:>3} files {r['figure_bytes'] / 1024:>4.0f} KiB "
              f"{r['page_seconds']:>7.2f} {r['stage_seconds']:>11.2f}")


if __name__ == "__main__":
    main()
