"""``metrics/report.md``, the evaluation summary as a Markdown page for a pull request: the
pieces every task's report shares (figure names, number formats, the calibration section
and the links to the plots). Each task renders its own body
(:func:`medpipe.evaluation.multiclass.render`, :func:`medpipe.evaluation.multilabel.render`)."""

from __future__ import annotations

import math

NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "sensitivity": "sensitivity (recall)",
    "specificity": "specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
}
RULES = {
    "youden": "Youden's J (max sensitivity + specificity - 1)",
    "target_sensitivity": "the highest threshold reaching the target sensitivity",
    "fixed": "fixed in params.yaml",
}


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def with_ci(value: float | None, interval: dict | None) -> str:
    if not interval:
        return fmt(value)
    return f"{fmt(value)} ({fmt(interval['low'])}–{fmt(interval['high'])})"


TTA_TEXT = {"hflip": "the image and its left-right mirror",
            "flips": "the image, its left-right and up-down mirrors and both"}


def tta_line(s: dict) -> list[str]:
    """A sentence on test-time augmentation, when it was used."""
    if s.get("tta", "none") == "none":
        return []
    return ["", f"Probabilities are the mean over {TTA_TEXT[s['tta']]} (test-time "
                f"augmentation `{s['tta']}`), on the validation split as on this one."]


def tail(s: dict, plots: dict[str, str], reliability: list[dict] | None) -> list[str]:
    """The calibration section and the links to the plots."""
    cal = s["calibration"]
    lines = ["", "## Calibration", "",
             f"Expected calibration error **{fmt(cal['ece'])}** (maximum {fmt(cal['mce'])}) "
             f"over {cal['bins']} equal-width bins of the {cal['probability']} probability."]
    if reliability:
        lines += ["", "| probability bin | cases | mean probability | observed frequency |",
                  "|---|---|---|---|"]
        lines += [f"| {r['lower']:.2f}–{r['upper']:.2f} | {r['count']} | "
                  f"{fmt(r['mean_probability'])} | {fmt(r['observed_frequency'])} |"
                  for r in reliability]

    lines += ["", "## Plots", "",
              "`dvc plots show` renders them into `dvc_plots/index.html`; "
              "`dvc plots diff main` compares them with another revision. Data:", ""]
    lines += [f"- [{title}]({path})" for title, path in plots.items()]
    return lines
