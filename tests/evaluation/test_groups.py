"""Subgroup performance: a gap between sites is found when one is there and not when it
is not; small groups are marked, kept, and left out of the gap; bad column names."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from tinymodels import PARAMS, fit_and_save, train_cfg

from medpipe import PipelineError
from medpipe.evaluation import groups, multiclass, multilabel, report
from medpipe.params.rules import STORE_COLUMNS
from medpipe.params.sections import EvaluateParams
from medpipe.task import MultiClass, MultiLabel

CFG = EvaluateParams(bootstrap=300, groups=["site"], min_group_cases=20)
CLASSES = ["normal", "opacity"]
TASK = MultiClass(CLASSES)


def scores(labels: np.ndarray, separation: float, rng: np.random.Generator) -> np.ndarray:
    """Two-class probabilities whose positive-class score is shifted by ``separation``."""
    logit = separation * (labels - 0.5) + rng.normal(0.0, 1.0, len(labels))
    p = 1.0 / (1.0 + np.exp(-logit))
    return np.stack([1.0 - p, p], axis=1)


def two_sites(separation_b: float, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 2 * n)
    probs = np.concatenate([scores(labels[:n], 4.0, rng), scores(labels[n:], separation_b, rng)])
    table = pd.DataFrame({"site": ["a"] * n + ["b"] * n})
    return labels, probs, table


def summarised(labels, probs, cfg=CFG) -> dict:
    summary, _ = multiclass.summarise(labels, probs, TASK, dataclasses.replace(
        cfg, threshold=0.5))
    return summary


def test_a_site_with_worse_images_shows_a_separated_gap() -> None:
    labels, probs, table = two_sites(separation_b=1.0)
    out = groups.subgroups(multiclass.group_figures, labels, probs, TASK, table,
                           summarised(labels, probs), CFG)
    site = out["site"]
    assert site["values"]["a"]["n"] == 400 and site["values"]["b"]["n"] == 400
    gap = site["gaps"]["roc_auc"]
    assert (gap["lowest"], gap["highest"]) == ("b", "a")
    assert gap["gap"] > 0.2 and gap["separated"] is True
    ci = site["values"]["a"]["ci95"]["roc_auc"]
    assert ci["low"] < site["values"]["a"]["roc_auc"] < ci["high"]


def test_sites_alike_show_no_separated_gap() -> None:
    labels, probs, table = two_sites(separation_b=4.0)
    out = groups.subgroups(multiclass.group_figures, labels, probs, TASK, table,
                           summarised(labels, probs), CFG)
    assert out["site"]["gaps"]["roc_auc"]["gap"] < 0.05
    assert out["site"]["gaps"]["roc_auc"]["separated"] is False


def test_small_groups_are_kept_marked_and_left_out_of_the_gap() -> None:
    labels, probs, table = two_sites(separation_b=1.0)
    table.loc[:9, "site"] = "c"  # 10 cases of a third site
    table.loc[10:11, "site"] = None  # and two with no site recorded
    out = groups.subgroups(multiclass.group_figures, labels, probs, TASK, table,
                           summarised(labels, probs), CFG)
    values = out["site"]["values"]
    assert values["c"]["small"] and values["c"]["n"] == 10
    assert values[groups.MISSING]["n"] == 2 and values[groups.MISSING]["small"]
    assert not values["a"]["small"]
    assert {out["site"]["gaps"]["roc_auc"]["lowest"],
            out["site"]["gaps"]["roc_auc"]["highest"]} == {"a", "b"}
    text = "\n".join(report.group_lines(out))
    assert "| c * | 10 |" in text and "Largest roc_auc gap" in text


def test_more_classes_get_per_class_figures_and_multilabel_its_mean_auc() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    probs[np.arange(300), labels] += 1.0
    probs /= probs.sum(1, keepdims=True)
    table = pd.DataFrame({"site": rng.choice(["a", "b"], 300)})
    three = MultiClass(["x", "y", "z"])
    summary, _ = multiclass.summarise(labels, probs, three, CFG)
    out = groups.subgroups(multiclass.group_figures, labels, probs, three, table, summary, CFG)
    assert set(out["site"]["values"]["a"]["per_class"]) == {"x", "y", "z"}

    findings = rng.integers(0, 2, (300, 2)).astype(np.uint8)
    fprobs = np.clip(findings * 0.6 + rng.uniform(0, 0.4, (300, 2)), 0, 1)
    cfg = dataclasses.replace(CFG, threshold=0.5)
    two = MultiLabel(["mass", "nodule"])
    summary, _ = multilabel.summarise(findings, fprobs, two, cfg)
    out = groups.subgroups(multilabel.group_figures, findings, fprobs, two, table, summary, cfg)
    assert out["site"]["values"]["a"]["roc_auc"] > 0.9
    assert out["site"]["values"]["a"]["ci95"]["roc_auc"]["low"] <= 1.0


def test_plot_rows_name_the_group_and_metric() -> None:
    labels, probs, table = two_sites(separation_b=1.0, n=50)
    out = groups.subgroups(multiclass.group_figures, labels, probs, TASK, table,
                           summarised(labels, probs), CFG)
    rows = groups.plot_rows(out)
    assert {r["group"] for r in rows} == {f"site={v} {m}" for v in "ab"
                                          for m in groups.GAP_METRICS}
    assert all(r["n"] == 50 for r in rows)


def test_a_column_that_is_not_there_is_named_with_those_that_are() -> None:
    table = pd.DataFrame({"split": ["test"], "source_id": ["x"], "site": ["a"]})
    with pytest.raises(PipelineError, match=r"'evaluate.groups' names sex, not a column of "
                                            r"data/prepared/manifest.csv; its columns are "
                                            r"split, source_id, site \(stage evaluate\)"):
        groups.check_columns(table, ["site", "sex"], "data/prepared/manifest.csv")


def test_group_names_are_checked_as_params() -> None:
    from medpipe.params.loading import validate

    with pytest.raises(PipelineError, match=r"evaluate.groups.*names site twice"):
        validate(dataclasses.replace(CFG, groups=["site", "site"]), stage="evaluate")


@pytest.mark.parametrize("column", STORE_COLUMNS)
def test_a_column_of_the_store_itself_is_refused_as_a_group(column: str) -> None:
    """``label`` would group by the label numbers, ``class`` by the truth being scored."""
    from medpipe.params.loading import validate

    with pytest.raises(PipelineError, match=rf"'evaluate.groups' names '{column}', a column "
                                            r"of the store itself, not an attribute of the "
                                            r"cases"):
        validate(dataclasses.replace(CFG, groups=["site", column]), stage="evaluate")


def test_the_refused_columns_are_those_prepare_writes(tmp_path) -> None:
    from medpipe.data import prepare
    from medpipe.data.raw import RawDataset
    from medpipe.params.sections import PrepareParams

    images = np.random.default_rng(0).integers(0, 255, (20, 8, 8)).astype(np.uint8)
    raw = RawDataset(classes=CLASSES, images=images,
                     labels=np.tile([0, 1], 10), ids=[str(i) for i in range(20)],
                     attributes=pd.DataFrame({"site": ["a"] * 20}))
    prepare.prepare(raw, tmp_path / "prepared", PrepareParams(image_size=8, channels=1,
                                                              workers=1, duplicates="warn"))
    columns = pd.read_csv(tmp_path / "prepared" / "manifest.csv").columns
    assert sorted(set(columns) - {"site"}) == sorted(STORE_COLUMNS)


def test_the_evaluate_stage_scores_the_manifest_columns(tmp_path) -> None:
    """Site b's images are noisier: the stage finds its lower AUC, writes the section,
    the plot rows and the report; a column that is not there stops it, naming those that
    are."""
    from medpipe.data import prepare
    from medpipe.data.raw import RawDataset
    from medpipe.params.sections import PrepareParams
    from stages import evaluate as evaluate_stage

    rng = np.random.default_rng(0)
    n = 240
    labels = np.tile([0, 1], n // 2)
    site = np.where(np.arange(n) % 4 < 2, "a", "b")
    images = rng.integers(0, 120, (n, 16, 16)).astype(np.uint8)
    images[labels == 1, 6:10, 6:10] += 25
    noisy = site == "b"
    images[noisy] = np.clip(images[noisy] + rng.normal(0, 110, (noisy.sum(), 16, 16)), 0,
                            255).astype(np.uint8)
    raw = RawDataset(classes=CLASSES, images=images, labels=labels,
                     ids=[f"img-{i:03d}" for i in range(n)],
                     attributes=pd.DataFrame({"site": site}))
    prepare.prepare(raw, tmp_path / "prepared", PrepareParams(
        seed=0, val_fraction=0.25, test_fraction=0.4, image_size=16, channels=1,
        on_error="fail", workers=1))
    # The committed schedule (one-cycle with its warm-up) over 4 epochs.
    fit_and_save(tmp_path / "prepared", tmp_path / "model.pt",
                 train_cfg(epochs=4, schedule=PARAMS["train"]["schedule"],
                           warmup_epochs=PARAMS["train"]["warmup_epochs"]), CLASSES)

    cfg = EvaluateParams(device="cpu", bootstrap=200, gradcam=0, groups=["site"],
                         min_group_cases=10)
    out = tmp_path / "metrics"
    summary = evaluate_stage.evaluate(cfg, tmp_path / "model.pt", tmp_path / "prepared",
                                      out / "evaluate.json", out / "evaluate",
                                      out / "report.md")
    site_figures = summary["groups"]["site"]
    assert site_figures["values"]["a"]["n"] + site_figures["values"]["b"]["n"] == summary["n"]
    assert site_figures["gaps"]["roc_auc"]["lowest"] == "b"
    assert "## Subgroups" in (out / "report.md").read_text()
    rows = json.loads((out / "evaluate" / "groups.json").read_text())
    assert {r["group"] for r in rows} >= {"site=a roc_auc", "site=b roc_auc"}

    with pytest.raises(PipelineError, match=r"names sex, not a column of .*manifest.csv; "
                                            r"its columns are split, index, label, class, "
                                            r"source_id, site"):
        evaluate_stage.evaluate(dataclasses.replace(cfg, groups=["sex"]), tmp_path / "model.pt",
                                tmp_path / "prepared", tmp_path / "m2.json", tmp_path / "p2",
                                tmp_path / "r2.md")
    assert not (tmp_path / "m2.json").exists()
