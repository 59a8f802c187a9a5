"""The evaluation report people look at: ``metrics/report.html``, one self-contained page
with its figures and a model card, and the same figures as PNG files
(``metrics/report_figures/``) that ``metrics/report.md`` shows.

Built from the in-memory results the Markdown report is built from (the summary, the
curves, the reliability rows, the predictions table and the report's own text), and
from what earlier stages wrote (:mod:`medpipe.evaluation.upstream`): the data's counts,
duplicates and preview, and the training curves. The page holds, in order: the model
card (:mod:`medpipe.evaluation.modelcard`), the data, the training curves, the report's
sections with their figures (ROC, precision-recall and the confusion matrix beside the
metrics, the reliability diagram beside calibration, the subgroups' and the folds'
beside theirs) and the Grad-CAM heat maps, right and wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medpipe.evaluation import figures, html, modelcard, upstream
from medpipe.utils.files import atomic_path, write_text

# Report section (its "## " heading) -> the figures shown after its text.
PLACES = {"Metrics": ("roc", "pr", "confusion"), "Calibration": ("reliability",),
          "Subgroups": ("subgroups",), "Cross-validation": ("folds",)}
LEFT_OUT = ("Plots",)  # links to DVC's plot data: files, not part of a page
MAX_DUPLICATE_GROUPS = 10  # listed on the page; metrics/prepare_detail.json has them all


@dataclass(frozen=True)
class PagePaths:
    """Where the page and its figures go, and the earlier stages' files it shows (None:
    that part is left out; see :func:`medpipe.evaluation.upstream.read`)."""

    html: Path
    figures: Path
    prepare: Path | None = None  # metrics/prepare_detail.json
    preview: Path | None = None  # metrics/prepare_preview.png
    dataset: Path | None = None  # data/raw/dataset.json
    live: Path | None = None  # metrics/train (DVCLive)


@dataclass(frozen=True)
class Results:
    """What the Markdown report is built from."""

    summary: dict
    classes: list[str]
    reliability: list[dict]
    roc: list[dict]
    pr: list[dict]
    predictions: pd.DataFrame
    markdown: str  # the report's text as the task's render wrote it
    gradcam: Path | None = None  # the folder of Grad-CAM PNGs


def write(paths: PagePaths, results: Results, report_path: Path) -> str:
    """Draw the figures, write them and the page; return the Markdown that ``report_path``
    adds to its text: the figures (paths relative to it) and the model card."""
    up = upstream.read(paths.prepare, paths.dataset, paths.preview, paths.live)
    drawn = draw(results, up)
    card = modelcard.render(results.summary, results.classes, up.prepare, up.dataset)
    maps = gradcam_pictures(results.gradcam)
    with atomic_path(paths.figures) as tmp:
        tmp.mkdir(parents=True)
        for p in drawn.values():
            (tmp / f"{p.name}.png").write_bytes(p.png)
    write_text(paths.html, page(results, up, drawn, card, maps))
    return markdown(report_path, paths, drawn, maps, results.gradcam) + "\n" + card


def draw(results: Results, up: upstream.Upstream) -> dict[str, html.Picture]:
    """Every figure there is something to draw for, by name."""
    s = results.summary
    multilabel = "findings" in s
    drawn = {
        "counts": ("Images per class and split",
                   figures.class_counts(up.prepare["counts"]) if up.prepare else None),
        "training": ("Training curves per epoch (train and validation splits)",
                     figures.training_curves(up.history)),
        "roc": (f"ROC curve ({s['split']} split)", figures.roc(results.roc, s)),
        "pr": (f"Precision-recall curve ({s['split']} split)",
               figures.precision_recall(results.pr, prevalence(s))),
        "confusion": (f"Confusion matrix at the decision rule ({s['split']} split)",
                      figures.confusion(results.predictions, results.classes, multilabel,
                                        decision_rule(s))),
        "reliability": (f"Reliability diagram ({s['calibration']['probability']} probability)",
                        figures.reliability(results.reliability,
                                            s["calibration"]["probability"])),
        "subgroups": ("Subgroups: figures per value with 95% intervals",
                      figures.subgroups(s["groups"]) if s.get("groups") else None),
        "folds": ("Cross-validation: fold models and their ensemble on the test split",
                  figures.folds(s["folds"], s["ensemble"]) if s.get("folds") else None),
    }
    return {name: html.Picture(name, title, png) for name, (title, png) in drawn.items()
            if png is not None}


def prevalence(summary: dict) -> dict[str, float]:
    """Each curve's share of positive cases (its precision by chance)."""
    n = summary["n"]
    if not n:
        return {}
    if "per_label" in summary:
        return {k: c["positives"] / n for k, c in summary["per_label"].items()}
    return {k: c["support"] / n for k, c in summary["per_class"].items()}


def decision_rule(summary: dict) -> str:
    if "findings" in summary:
        return "per-finding thresholds"
    value = summary["threshold"].get("value")
    return "argmax" if value is None else f"threshold {value:.3f}"


def gradcam_pictures(folder: Path | None) -> list[html.Picture]:
    """The Grad-CAM PNGs of the folder, in their order (right ones first)."""
    if folder is None or not folder.is_dir():
        return []
    return [html.Picture(p.stem, p.stem.replace("_", " "), p.read_bytes())
            for p in sorted(folder.glob("*.png"))]


def page(results: Results, up: upstream.Upstream, drawn: dict[str, html.Picture],
         card: str, maps: list[html.Picture]) -> str:
    """The HTML page (see the module docstring)."""
    title, intro, report = html.split_markdown(results.markdown)
    sections = html.split_markdown(card)[2]
    data = data_section(up, drawn)
    if data is not None:
        sections.append(data)
    if "training" in drawn:
        sections.append(html.Section(
            "Training", "Loss and figures per epoch, as the train stage logged them.",
            [drawn["training"]]))
    placed = {"counts", "training"}
    for section in report:
        if section.heading in LEFT_OUT:
            continue
        section.pictures = [drawn[n] for n in PLACES.get(section.heading, ()) if n in drawn]
        placed |= {p.name for p in section.pictures}
        sections.append(section)
    rest = [p for n, p in drawn.items() if n not in placed]
    if rest:
        sections.append(html.Section("Figures", "", rest))
    for verdict, shown in (("right", [p for p in maps if "_correct_" in p.name]),
                           ("wrong", [p for p in maps if "_correct_" not in p.name])):
        if shown:
            sections.append(html.Section(
                f"Grad-CAM, predicted {verdict}",
                f"Where the model looked in {len(shown)} images it predicted {verdict}: "
                "each the image, and the map of the explained class over it.", shown,
                gallery=True))
    model = results.summary.get("model_sha256", "")
    footer = (f"Written by the evaluate stage of medpipe; model sha256 `{model[:12]}`. "
              "Research use only, not a medical device.")
    return html.render(title, intro, sections, footer)


def data_section(up: upstream.Upstream, drawn: dict[str, html.Picture]) -> html.Section | None:
    """Images per split and class, duplicates, and the preview of training images."""
    pictures = [drawn["counts"]] if "counts" in drawn else []
    if up.preview:
        pictures.append(html.Picture("preview", "Training images per class, as stored",
                                     up.preview))
    if not up.prepare and not pictures:
        return None
    return html.Section("Data", "\n".join(data_lines(up.prepare)) if up.prepare else "",
                        pictures)


def data_lines(prepare: dict) -> list[str]:
    counts = prepare.get("counts") or {}
    splits = list(counts)
    classes = list(counts[splits[0]]) if splits else []
    lines = ["| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {c} | " + " | ".join(f"{counts[s].get(c, 0):,}" for s in splits) + " |"
              for c in classes]
    images = prepare.get("images") or {}
    lines.append("| **all** | " + " | ".join(f"{images.get(s, 0):,}" for s in splits) + " |")
    dup = prepare.get("duplicates") or {}
    lines += ["", f"Duplicate groups across splits or labels: **{dup.get('count', 0)}** "
              f"({dup.get('exact', 0)} of the same pixels); copies dropped: "
              f"{dup.get('dropped', 0)}."]
    groups = dup.get("groups") or []
    if groups:
        lines.append("")
        lines += [f"- {', '.join(f'`{i}`' for i in g)}" for g in groups[:MAX_DUPLICATE_GROUPS]]
        if len(groups) > MAX_DUPLICATE_GROUPS:
            lines.append(f"- … and {len(groups) - MAX_DUPLICATE_GROUPS} more groups "
                         "(metrics/prepare_detail.json)")
    return lines


def markdown(report_path: Path, paths: PagePaths, drawn: dict[str, html.Picture],
             maps: list[html.Picture], gradcam: Path | None) -> str:
    """The figures section of report.md, each PNG linked relative to the report."""
    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, report_path.parent)).as_posix()

    lines = ["", "## Figures", "",
             f"The same report with every figure in one file: [{paths.html.name}]"
             f"({rel(paths.html)}).", ""]
    if paths.preview is not None:
        lines += [f"![Training images per class]({rel(paths.preview)})", ""]
    lines += [f"![{p.title}]({rel(paths.figures / (p.name + '.png'))})\n" for p in
              drawn.values()]
    if maps and gradcam is not None:
        lines += ["### Grad-CAM heat maps", ""]
        lines += [f"![{p.title}]({rel(gradcam / (p.name + '.png'))})\n" for p in maps]
    return "\n".join(lines)
