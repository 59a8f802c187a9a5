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
    """The subgroups (when scored), the calibration section and the links to the plots."""
    cal = s["calibration"]
    lines = group_lines(s["groups"]) if s.get("groups") else []
    if s.get("folds"):
        lines += fold_lines(s["folds"], s["ensemble"])
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
    return lines


GROUP_METRICS = ("roc_auc", "sensitivity", "specificity")


def group_lines(groups: dict) -> list[str]:
    """The section on subgroups (see :mod:`medpipe.evaluation.groups`)."""
    min_cases = next(iter(groups.values()))["min_cases"]
    lines = ["", "## Subgroups", "",
             "Each value scored on its own at the decisions of the whole split; in brackets "
             f"95% bootstrap intervals. Marked *: fewer than {min_cases} cases, reported but "
             "left out of the largest gap."]
    for column, section in groups.items():
        lines += ["", f"### {column}", "",
                  "| value | cases | AUC | sensitivity | specificity |", "|---|---|---|---|---|"]
        for value, fig in section["values"].items():
            ci = fig.get("ci95") or {}
            lines.append(f"| {value}{' *' if fig['small'] else ''} | {fig['n']} | "
                         + " | ".join(with_ci(fig[m], ci.get(m)) for m in GROUP_METRICS) + " |")
        lines.append("")
        for metric, gap in section["gaps"].items():
            if gap is None:
                lines.append(f"- Largest {metric} gap: n/a (fewer than two values with "
                             f"{min_cases} cases or more).")
                continue
            ci = gap.get("ci95")
            verdict = ("no interval" if ci is None else
                       f"98.3% interval {fmt(ci['low'])} to {fmt(ci['high'])}, "
                       + ("above 0" if gap["separated"] else "includes 0"))
            lines.append(f"- Largest {metric} gap: {fmt(gap['gap'])} ({gap['lowest']} "
                         f"against {gap['highest']}); {verdict}.")
    return lines


def fold_lines(folds: dict, ensemble: dict) -> list[str]:
    """The section on cross-validation (see :mod:`medpipe.evaluation.crossval`)."""
    lines = ["", "## Cross-validation", "",
             f"{folds['k']} fold models, each trained on the pool (train + val) outside its "
             "fold, its best epoch chosen on its fold. Test: the test split, which no fold "
             "model has seen, at the decision chosen on the fold.", "",
             "| fold | val AUC | val accuracy | test AUC | test accuracy | test sensitivity "
             "| test specificity |", "|---|---|---|---|---|---|---|"]
    rows = [(str(f["fold"]), f["val"], f["test"]) for f in folds["per_fold"]]
    rows.append(("mean ± sd", None, None))
    for name, val, test in rows:
        if val is None:
            m, sd = folds["mean"], folds["sd"]
            cells = [f"{fmt(m['val'][k])} ± {fmt(sd['val'][k])}" for k in ("roc_auc", "accuracy")]
            cells += [f"{fmt(m['test'][k])} ± {fmt(sd['test'][k])}"
                      for k in ("roc_auc", "accuracy", "sensitivity", "specificity")]
        else:
            cells = [fmt(val[k]) for k in ("roc_auc", "accuracy")]
            cells += [fmt(test[k]) for k in ("roc_auc", "accuracy", "sensitivity",
                                             "specificity")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ci = ensemble.get("ci95") or {}
    at = ensemble.get("at_threshold", ensemble)
    ci_at = ci.get("at_threshold", ci)
    thr = ensemble["threshold"]
    rule = (f"threshold {thr['value']:.4f} chosen on the out-of-fold predictions"
            if thr.get("value") is not None else "argmax"
            if "per_label" not in thr else "per-finding thresholds chosen out of fold")
    lines += ["", f"Ensemble (the {ensemble['members']} fold models' mean probability) on the "
              f"test split, {rule}: AUC **{with_ci(ensemble['roc_auc'], ci.get('roc_auc'))}**, "
              f"accuracy {with_ci(at['accuracy'], ci_at.get('accuracy'))}, sensitivity "
              f"{with_ci(at['sensitivity'], ci_at.get('sensitivity'))}, specificity "
              f"{with_ci(at['specificity'], ci_at.get('specificity'))}."]
    return lines
