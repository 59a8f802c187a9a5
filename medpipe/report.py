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


def render(summary: dict, *, model: str, model_sha256: str, plots: dict[str, str],
           reliability: list[dict] | None = None) -> str:
    """The report. ``plots`` maps a plot title to a path relative to the report;
    ``reliability`` (rows of :func:`medpipe.calibration.reliability`) adds a bin table."""
    s = summary
    binary = "positive_class" in s
    ci = s.get("ci95") or {}
    thr = s["threshold"]
    lines = [
        f"# Evaluation on the {s['split']} split",
        "",
        f"Model `{model}` (sha256 `{model_sha256[:12]}`), {s['n']} cases: "
        + ", ".join(f"{name} {c['support']}" for name, c in s["per_class"].items()) + ".",
    ]
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

    cal = s["calibration"]
    lines += ["", "## Calibration", "",
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
    return "\n".join(lines) + "\n"


def _flat(ci: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for key, value in ci.items():
        if "low" in value:
            out[prefix + key] = value
        else:
            out.update(_flat(value, f"{prefix}{key}."))
    return out
