"""``metrics/report.md``: the evaluation summary as a Markdown page for a pull request."""

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


def render(summary: dict, *, model: str, model_sha256: str, plots: dict[str, str],
           reliability: list[dict] | None = None) -> str:
    """The report. ``plots`` maps a plot title to a path relative to the report;
    ``reliability`` (rows of :func:`medpipe.evaluation.calibration.reliability`) adds a
    bin table."""
    if summary.get("task") == "multilabel":
        return render_multilabel(summary, model=model, model_sha256=model_sha256,
                                 plots=plots, reliability=reliability)
    s = summary
    binary = "positive_class" in s
    ci = s.get("ci95") or {}
    thr = s["threshold"]
    lines = [
        f"# Evaluation on the {s['split']} split",
        "",
        f"Model `{model}` (sha256 `{model_sha256[:12]}`), {s['n']} cases: "
        + ", ".join(f"{name} {c['support']}" for name, c in s["per_class"].items()) + ".",
    ] + tta_line(s)
    if binary:
        lines += ["", f"Positive class: **{s['positive_class']}**. Sensitivity, specificity, "
                  "PPV, NPV and F1 are those of the positive class."]
    else:
        lines += ["", "Decision: argmax. Overall sensitivity, specificity, PPV, NPV and F1 "
                  "are macro means over the classes."]

    lines += ["", "## Decision threshold", ""]
    if binary:
        where = {"val": "on the validation split", "params": ""}[thr["chosen_on"]]
        lines.append(f"A case is called {s['positive_class']} when p({s['positive_class']}) "
                     f">= **{thr['value']:.4f}**, chosen {where} by "
                     f"{RULES[thr['rule']]}".rstrip() + ".")
        if thr["rule"] == "target_sensitivity":
            lines.append(f"Target sensitivity: {thr['target_sensitivity']}.")
        if thr["chosen_on"] == "val":
            lines.append(f"On the validation split it gives sensitivity "
                         f"{fmt(thr['val_sensitivity'])} and specificity "
                         f"{fmt(thr['val_specificity'])}; it is applied unchanged to the "
                         f"{s['split']} split.")
        if thr.get("fallback"):
            lines.append(f"**Fallback:** {thr['fallback']}; 0.5 was used.")
    else:
        lines.append("Multi-class task: each case gets its most probable class (argmax).")

    boot = s["bootstrap"]
    lines += ["", "## Metrics", ""]
    lines.append(f"ROC AUC: **{with_ci(s['roc_auc'], ci.get('roc_auc'))}**")
    lines.append("")
    if binary:
        at = s["at_threshold"]
        ci_at = ci.get("at_threshold", {})
        lines += [f"| metric | threshold {thr['value']:.4f} ({thr['rule']}) | threshold 0.5 |",
                  "|---|---|---|"]
        for key, name in NAMES.items():
            lines.append(f"| {name} | {with_ci(at[key], ci_at.get(key))} "
                         f"| {with_ci(s[key], ci.get(key))} |")
    else:
        lines += ["| metric | argmax |", "|---|---|"]
        for key, name in NAMES.items():
            lines.append(f"| {name} | {with_ci(s[key], ci.get(key))} |")
    lines.append("")
    if ci:
        lines.append(f"In brackets: 95% bootstrap confidence intervals ({boot['method']}; "
                     f"{boot['resamples']} resamples, seed {boot['seed']}).")
        dropped = {k: v["dropped"] for k, v in _flat(ci).items() if v["dropped"]}
        if dropped:
            lines.append("Resamples dropped where a metric was undefined: " + ", ".join(
                f"{k} {n}" for k, n in dropped.items()) + ".")
    else:
        lines.append("No confidence intervals (`evaluate.bootstrap: 0`).")

    per_class = s["at_threshold"]["per_class"] if binary else s["per_class"]
    rule = f"threshold {thr['value']:.4f}" if binary else "argmax"
    lines += ["", f"### Per class ({rule}, one-vs-rest)", "",
              "| class | support | sensitivity | specificity | PPV | NPV | F1 |",
              "|---|---|---|---|---|---|---|"]
    for name, c in per_class.items():
        lines.append(f"| {name} | {c['support']} | {fmt(c['sensitivity'])} | "
                     f"{fmt(c['specificity'])} | {fmt(c['ppv'])} | {fmt(c['npv'])} | "
                     f"{fmt(c['f1'])} |")

    return "\n".join(lines + _tail(s, plots, reliability)) + "\n"


def _tail(s: dict, plots: dict[str, str], reliability: list[dict] | None) -> list[str]:
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


def render_multilabel(summary: dict, *, model: str, model_sha256: str, plots: dict[str, str],
                      reliability: list[dict] | None = None) -> str:
    """The report of a multi-label task: one row per finding."""
    s = summary
    ci = s.get("ci95") or {}
    thr = s["threshold"]
    at = s["at_threshold"]
    lines = [
        f"# Evaluation on the {s['split']} split (multi-label)",
        "",
        f"Model `{model}` (sha256 `{model_sha256[:12]}`), {s['n']} images, "
        f"{len(s['findings'])} findings, each scored on its own (a sigmoid per finding).",
        *tta_line(s),
        "",
        "## Decision thresholds",
        "",
    ]
    if thr["chosen_on"] == "val":
        lines.append(f"Each finding is called when its probability >= its own threshold, "
                     f"chosen on the validation split by {RULES[thr['rule']]}, and applied "
                     f"unchanged to the {s['split']} split.")
        if thr["rule"] == "target_sensitivity":
            lines.append(f"Target sensitivity: {thr['target_sensitivity']}.")
    else:
        value = next(iter(thr["per_label"].values()))["value"] if thr["per_label"] else 0.5
        lines.append(f"Each finding is called when its probability >= {value} "
                     "(fixed in params.yaml).")
    fallbacks = [f"{name} ({t['fallback']})" for name, t in thr["per_label"].items()
                 if t.get("fallback")]
    if fallbacks:
        lines.append("**Fallback to 0.5:** " + "; ".join(fallbacks) + ".")

    lines += ["", "## Metrics", "",
              f"Mean ROC AUC over the findings: **{with_ci(s['roc_auc'], ci.get('roc_auc'))}**",
              ""]
    lines += ["| metric | per-finding thresholds | threshold 0.5 |", "|---|---|---|"]
    for key, name in [("accuracy", "accuracy (all image-finding decisions)"),
                      ("exact_match", "exact match (every finding right)"),
                      *[(k, f"mean {v}") for k, v in NAMES.items()
                        if k not in ("accuracy", "balanced_accuracy")]]:
        lines.append(f"| {name} | {fmt(at[key])} | {fmt(s[key])} |")
    lines.append("")
    if ci:
        boot = s["bootstrap"]
        lines.append(f"In brackets: 95% bootstrap confidence interval ({boot['method']}; "
                     f"{boot['resamples']} resamples, seed {boot['seed']}).")
    else:
        lines.append("No confidence intervals (`evaluate.bootstrap: 0`).")
    lines += ["", "### Per finding", "",
              "| finding | positives | negatives | AUC | threshold | sensitivity | specificity "
              "| PPV | sensitivity at 0.5 | specificity at 0.5 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in s["per_label"].items():
        t, a = thr["per_label"][name], at["per_label"][name]
        lines.append(f"| {name} | {c['positives']} | {c['negatives']} | {fmt(c['auc'])} | "
                     f"{t['value']:.4f} | {fmt(a['sensitivity'])} | {fmt(a['specificity'])} | "
                     f"{fmt(a['ppv'])} | {fmt(c['sensitivity'])} | {fmt(c['specificity'])} |")
    lines.append("")
    lines.append("n/a: undefined on this split (a finding with no positive or no negative "
                 "image has no AUC, and is left out of the means).")
    return "\n".join(lines + _tail(s, plots, reliability)) + "\n"


def _flat(ci: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for key, value in ci.items():
        if "low" in value:
            out[prefix + key] = value
        else:
            out.update(_flat(value, f"{prefix}{key}."))
    return out


def headline(summary: dict, split: str) -> str:
    """The one-line result the evaluate stage logs."""
    if summary.get("task") == "multilabel":
        return (f"{split}: mean ROC AUC {summary['roc_auc']:.4f} over "
                f"{len(summary['findings'])} findings  accuracy {summary['accuracy']:.4f}  "
                f"exact match {summary['exact_match']:.4f}")
    line = (f"{split}: accuracy {summary['accuracy']:.4f}  balanced accuracy "
            f"{summary['balanced_accuracy']:.4f}  ROC AUC {summary['roc_auc']:.4f}")
    if "at_threshold" in summary:
        at, thr = summary["at_threshold"], summary["threshold"]
        line += (f"; at threshold {thr['value']:.4f} ({thr['rule']}): sensitivity "
                 f"{at['sensitivity']:.4f}  specificity {at['specificity']:.4f}")
    return line

