"""The evaluation report's figures, drawn with matplotlib (Agg) as PNG bytes: the images per
class and split, the training curves, ROC and precision-recall curves, the confusion
matrix at the decision threshold, the reliability diagram, the subgroups and the
cross-validation folds.

Each function takes the in-memory results the Markdown report is built from (the
summary, the curve and reliability rows, the predictions table) and returns the bytes
of one PNG, or None when there is nothing to draw. Figures are drawn on their own
:class:`~matplotlib.figure.Figure` (no pyplot state), so the same inputs give the
same bytes.
"""

from __future__ import annotations

import io
import math
import numbers
from collections import defaultdict

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
WIDTH = 6.4  # inches: 640 px, the page's column
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _figure(width: float = WIDTH, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No Software/date metadata: the same figure gives the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(x)


def _by_class(rows: list[dict], x: str, y: str) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for r in rows:
        out[r["class"]][0].append(r[x])
        out[r["class"]][1].append(r[y])
    return dict(out)


def class_counts(counts: dict[str, dict[str, int]]) -> bytes | None:
    """Horizontal bars: images per class, one bar per split (``counts[split][class]``)."""
    splits = [s for s in ("train", "val", "test") if counts.get(s)]
    if not splits:
        return None
    classes = list(counts[splits[0]])
    fig = _figure(height=max(2.0, 0.45 * len(classes) * len(splits) + 1.0))
    ax = fig.add_subplot()
    bar = 0.8 / len(splits)
    y = np.arange(len(classes))
    for j, split in enumerate(splits):
        values = [counts[split].get(c, 0) for c in classes]
        bars = ax.barh(y + j * bar, values, bar, label=split, color=COLOURS[j])
        ax.bar_label(bars, padding=2, fontsize=8)
    ax.set_yticks(y + bar * (len(splits) - 1) / 2, classes)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.margins(x=0.12)
    fig.legend(loc="outside right upper", fontsize=8)
    ax.set_title("Images per class and split")
    return _png(fig)


def training_curves(history: dict[str, dict[str, tuple[list, list]]]) -> bytes | None:
    """One panel per metric (loss, accuracy, AUC, ...), a line per split, against epoch.
    ``history[metric][split] = (epochs, values)``."""
    if not history:
        return None
    names = sorted(history, key=lambda m: (m != "loss", m))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(height=2.6 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, names, strict=False):
        for j, (split, (steps, values)) in enumerate(sorted(history[metric].items())):
            ax.plot(steps, values, marker="o", markersize=3, label=split,
                    color=COLOURS[j % len(COLOURS)])
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return _png(fig)


def roc(rows: list[dict], summary: dict) -> bytes | None:
    """ROC curves (the positive class's, or one-vs-rest per class / finding), with the
    chosen operating point of a two-class task marked."""
    if not rows:
        return None
    fig = _figure(width=5.2, height=4.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1, label="chance")
    for j, (name, (fpr, tpr)) in enumerate(_by_class(rows, "fpr", "tpr").items()):
        ax.plot(fpr, tpr, color=COLOURS[j % len(COLOURS)], lw=1.8, label=name)
    thr, at = summary.get("threshold") or {}, summary.get("at_threshold") or {}
    if _finite(thr.get("value")) and _finite(at.get("sensitivity")) \
            and _finite(at.get("specificity")):
        ax.plot(1 - at["specificity"], at["sensitivity"], "k*", markersize=12,
                label=f"threshold {thr['value']:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", title="ROC curve", aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def precision_recall(rows: list[dict], prevalence: dict[str, float]) -> bytes | None:
    """Precision-recall curves, with each class's prevalence (the precision of chance)."""
    if not rows:
        return None
    fig = _figure(width=5.2, height=4.6)
    ax = fig.add_subplot()
    for j, (name, (recall, precision)) in enumerate(
            _by_class(rows, "recall", "precision").items()):
        colour = COLOURS[j % len(COLOURS)]
        ax.plot(recall, precision, color=colour, lw=1.8, label=name, drawstyle="steps-post")
        if _finite(prevalence.get(name)):
            ax.axhline(prevalence[name], color=colour, ls=":", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (sensitivity)",
           ylabel="precision (PPV)", title="Precision-recall (dotted: prevalence)",
           aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def _matrix(ax, counts: np.ndarray, labels: list[str], title: str) -> None:
    """Counts with the share of each actual class (row) in the cell; colour = that share."""
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    fontsize=8 if counts.shape[0] > 4 else 10,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0,
                  ha="right" if len(labels) > 3 else "center")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="actual", title=title)


def confusion(table: pd.DataFrame, classes: list[str], multilabel: bool,
              rule: str) -> bytes | None:
    """The confusion matrix at the decision threshold (``predicted_at_threshold``);
    multi-label: a 2x2 matrix per finding (absent / present)."""
    if table.empty:
        return None
    if not multilabel:
        index = {c: k for k, c in enumerate(classes)}
        counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(counts, (table["actual"].map(index).to_numpy(),
                           table["predicted_at_threshold"].map(index).to_numpy()), 1)
        side = min(7.0, 2.5 + 0.7 * len(classes))
        fig = _figure(width=side, height=side - 0.3)
        _matrix(fig.add_subplot(), counts, classes, f"Confusion matrix ({rule})")
        return _png(fig)
    cols = min(4, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig = _figure(height=2.6 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, classes, strict=False):
        true, called = table[f"true_{name}"].to_numpy(), table[f"pred_{name}"].to_numpy()
        counts = np.array([[np.sum((true == a) & (called == p)) for p in (0, 1)]
                           for a in (0, 1)])
        _matrix(ax, counts, ["absent", "present"], name)
    for ax in axes[len(classes):]:
        ax.set_visible(False)
    fig.suptitle(f"Confusion per finding ({rule})")
    return _png(fig)


def reliability(rows: list[dict], probability: str) -> bytes | None:
    """Reliability diagram: observed frequency against mean probability per bin (the
    diagonal is perfect calibration), and the cases per bin below."""
    if not rows:
        return None
    fig = _figure(width=5.2, height=5.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1, label="perfect")
    mean = [r["mean_probability"] for r in rows]
    observed = [r["observed_frequency"] for r in rows]
    top.plot(mean, observed, "o-", color=COLOURS[0], label="model")
    top.set(ylim=(0, 1.02), ylabel="observed frequency", title="Reliability diagram")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    width = [r["upper"] - r["lower"] for r in rows]
    bottom.bar([r["lower"] for r in rows], [r["count"] for r in rows], width=width,
               align="edge", color=COLOURS[0], alpha=0.6, edgecolor="white")
    bottom.set(xlim=(0, 1), xlabel=f"mean predicted probability ({probability})",
               ylabel="cases")
    return _png(fig)


GROUP_METRICS = ("roc_auc", "sensitivity", "specificity")


def subgroups(groups: dict) -> bytes | None:
    """A forest plot: per subgroup value its AUC, sensitivity and specificity with 95%
    intervals (hollow: fewer cases than ``min_cases``)."""
    labels, figures = [], []
    for column, section in groups.items():
        for value, fig in section["values"].items():
            labels.append(f"{column}={value} (n={fig['n']})")
            figures.append(fig)
    if not figures:
        return None
    fig = _figure(height=max(2.4, 0.32 * len(labels) + 1.2))
    axes = fig.subplots(1, len(GROUP_METRICS), sharey=True)
    y = np.arange(len(labels))
    for ax, metric in zip(axes, GROUP_METRICS, strict=True):
        for i, f in enumerate(figures):
            value = f.get(metric)
            if not _finite(value):
                continue
            ci = (f.get("ci95") or {}).get(metric) or {}
            if _finite(ci.get("low")) and _finite(ci.get("high")):
                ax.plot([ci["low"], ci["high"]], [i, i], color=COLOURS[0], lw=1.5)
            ax.plot(value, i, "o", color=COLOURS[0],
                    markerfacecolor="white" if f.get("small") else COLOURS[0])
        ax.set(xlim=(-0.02, 1.02), title=metric.replace("roc_auc", "AUC"))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Subgroups (95% intervals; hollow: small group)")
    return _png(fig)


FOLD_METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity")


def folds(section: dict, ensemble: dict) -> bytes | None:
    """Each fold model's test figures (dots), their mean ± sd (bar), and the fold
    ensemble's with its 95% interval (star)."""
    if not section.get("per_fold"):
        return None
    fig = _figure(height=3.4)
    ax = fig.add_subplot()
    at, ci = ensemble.get("at_threshold", ensemble), ensemble.get("ci95") or {}
    ci_at = ci.get("at_threshold", ci)
    for x, metric in enumerate(FOLD_METRICS):
        values = [f["test"][metric] for f in section["per_fold"] if _finite(f["test"][metric])]
        ax.plot([x - 0.15] * len(values), values, "o", color=COLOURS[0], alpha=0.7,
                label="fold model" if x == 0 else None)
        mean, sd = section["mean"]["test"][metric], section["sd"]["test"][metric]
        if _finite(mean) and _finite(sd):
            ax.errorbar(x - 0.15, mean, yerr=sd, fmt="_", color="black", capsize=6,
                        markersize=14, label="mean ± sd" if x == 0 else None)
        value = ensemble["roc_auc"] if metric == "roc_auc" else at.get(metric)
        interval = (ci if metric == "roc_auc" else ci_at).get(metric) or {}
        if _finite(value):
            err = ([[value - interval["low"]], [interval["high"] - value]]
                   if _finite(interval.get("low")) and _finite(interval.get("high")) else None)
            ax.errorbar(x + 0.15, value, yerr=err, fmt="*", color=COLOURS[1], markersize=12,
                        capsize=4, label="ensemble (95% CI)" if x == 0 else None)
    ax.set_xticks(range(len(FOLD_METRICS)), ["AUC", "accuracy", "sensitivity", "specificity"])
    ax.set(ylim=(-0.02, 1.02), ylabel="test split",
           title=f"Cross-validation: {section['k']} fold models and their ensemble")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)
