"""The evaluation report as a page: built by the evaluate stage's own function from a tiny
trained model and store (with subgroups and Grad-CAM maps), self-contained, showing every
part, the same figures as report.md, and rendered by a real headless browser with no
network: every image decodes, nothing is fetched, no console error."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path

import chromium
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tinymodels import fit_and_save, train_cfg

from medpipe import PipelineError
from medpipe.data import prepare, preview
from medpipe.data.raw import RawDataset
from medpipe.evaluation import figures, multilabel, page
from medpipe.inference.evaluate import evaluate
from medpipe.params.sections import EvaluateParams, PrepareParams
from medpipe.task import MultiLabel
from medpipe.utils.files import write_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["normal", "opacity"]
EPOCHS = 3


@dataclass(frozen=True)
class Built:
    root: Path
    summary: dict
    html: Path
    report: Path
    figures: Path
    gradcam: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Built:
    """A store of two sites, a model trained on it, the curves DVCLive logged, and the
    evaluate stage's outputs with the page."""
    from dvclive import Live

    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    n = 200
    labels = np.tile([0, 1], n // 2)
    images = rng.integers(0, 120, (n, 16, 16)).astype(np.uint8)
    images[labels == 1, 6:10, 6:10] += 40
    raw = RawDataset(classes=CLASSES, images=images, labels=labels,
                     ids=[f"img-{i:03d}" for i in range(n)],
                     attributes=pd.DataFrame({"site": np.where(np.arange(n) % 4 < 2, "a",
                                                               "b")}))
    stats = prepare.prepare(raw, root / "prepared", PrepareParams(
        seed=0, val_fraction=0.25, test_fraction=0.4, image_size=16, channels=1,
        on_error="fail", workers=1))
    write_json(root / "prepare.json", stats)
    preview.write_grid(root / "prepared", root / "preview.png")
    write_json(root / "dataset.json", {"source": "synthetic", "seed": 0, "count": n})
    with Live(dir=str(root / "train"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for epoch in range(EPOCHS):
            for name, value in {"train/loss": 1 / (epoch + 1), "val/loss": 1.1 / (epoch + 1),
                                "val/auc": 0.6 + 0.1 * epoch}.items():
                live.log_metric(name, value, plot=True)
            live.next_step()
    fit_and_save(root / "prepared", root / "model.pt", train_cfg(epochs=EPOCHS), CLASSES)

    out = root / "metrics"
    paths = page.PagePaths(out / "report.html", out / "report_figures", root / "prepare.json",
                           root / "preview.png", root / "dataset.json", root / "train")
    cfg = EvaluateParams(device="cpu", bootstrap=100, gradcam=4, groups=["site"],
                         min_group_cases=10)
    summary = evaluate(cfg, root / "model.pt", root / "prepared", out / "evaluate.json",
                       out / "evaluate", out / "report.md", out / "gradcam", None, paths)
    return Built(root, summary, out / "report.html", out / "report.md",
                 out / "report_figures", out / "gradcam")


def embedded_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_the_page_is_self_contained(built: Built) -> None:
    text = built.html.read_text(encoding="utf-8")
    assert not re.search(r"https?:", text, re.I)  # no link, image, font or style from afar
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert "url(" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for png in embedded_pngs(text):
        Image.open(io.BytesIO(png)).verify()
    maps = len(list(built.gradcam.glob("*.png")))
    assert maps == 4
    # the drawn figures, the preview grid and the heat maps
    assert len(sources) == len(list(built.figures.glob("*.png"))) + 1 + maps


def test_the_page_shows_every_part(built: Built) -> None:
    text = built.html.read_text(encoding="utf-8")
    headings = re.findall(r"<h2>(.*?)</h2>", text)
    for part in ["Model card", "Data", "Training", "Decision threshold", "Metrics",
                 "Subgroups", "Calibration", "Grad-CAM, predicted right",
                 "Grad-CAM, predicted wrong"]:
        assert part in headings, part
    assert "Plots" not in headings  # links to DVC's plot files are no part of a page
    assert {p.stem for p in built.figures.glob("*.png")} == {
        "counts", "training", "roc", "pr", "confusion", "reliability", "subgroups"}
    thr = built.summary["threshold"]["value"]
    card = text[text.index('id="model-card"'):text.index('id="data"')]
    assert "not a medical device" in card and "Positive class: <strong>opacity</strong>" in card
    assert f"{thr:.4f}" in card and "Youden" in card
    # The limitations come from the numbers: the test split has 40 cases a class, the
    # ECE is what the summary says, the images are synthetic.
    ece = built.summary["calibration"]["ece"]
    assert ("Calibration: the positive class probability is off by" in card) == (ece > 0.05)
    assert "synthetic" in card and "Patient ids are unknown" in card
    assert "Duplicate groups across splits or labels: <strong>0</strong>" in text
    table = re.search(r"<table>.*?</table>", text[text.index('id="data"'):], re.S).group(0)
    assert "<td>opacity</td>" in table and "<td>40</td>" in table  # test cases per class


def test_report_md_shows_the_same_figures(built: Built) -> None:
    text = built.report.read_text(encoding="utf-8")
    assert text.startswith("# Evaluation on the test split") and "## Model card" in text
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    files = [built.report.parent / link for link in links]
    assert all(f.is_file() for f in files), links
    shown = {f.resolve() for f in files}
    assert {f.resolve() for f in built.figures.glob("*.png")} <= shown
    assert {f.resolve() for f in built.gradcam.glob("*.png")} <= shown
    embedded = embedded_pngs(built.html.read_text(encoding="utf-8"))
    assert all(f.read_bytes() in embedded for f in files)  # the page shows the same PNGs


def test_the_page_renders_in_a_browser_with_no_network(built: Built, tmp_path: Path) -> None:
    browser = chromium.require()
    loaded = chromium.load(browser, built.html, tmp_path)
    assert loaded.images == len(embedded_pngs(built.html.read_text(encoding="utf-8")))
    assert loaded.broken == [] and loaded.fetched == [] and loaded.errors == []
    assert loaded.console == []
    shot = chromium.screenshot(browser, built.html, tmp_path / "report.png", (1200, 2400))
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1200, 2400)
        grey = np.asarray(im.convert("L"))
    # Not blank: text and figures, many shades, ink over a good part of the page.
    assert len(np.unique(grey)) > 50 and (grey < 200).mean() > 0.01


def test_the_browser_check_sees_a_broken_page(built: Built, tmp_path: Path) -> None:
    """The check can fail: an image that does not decode, and one from the network."""
    browser = chromium.require()
    page_file = tmp_path / "broken.html"
    page_file.write_text(built.html.read_text(encoding="utf-8").replace(
        '<img src="data:image/png;base64,', '<img src="data:image/png;base64,AAAA', 1).replace(
        "</main>", '<img src="https://example.invalid/x.png" alt="remote"></main>', 1))
    loaded = chromium.load(browser, page_file, tmp_path / "work")
    assert len(loaded.broken) == 2 and "remote" in loaded.broken
    assert loaded.errors and loaded.fetched == ["https://example.invalid/x.png"]


def test_a_multilabel_page(tmp_path: Path) -> None:
    """No model needed: a multi-label task's results give its page, with a confusion
    matrix per finding, and nothing from earlier stages."""
    rng = np.random.default_rng(1)
    names = ["effusion", "opacity", "nodule"]
    labels = (rng.random((60, 3)) < 0.4).astype(np.int64)
    probs = np.clip(0.6 * labels + 0.4 * rng.random((60, 3)), 0, 1)
    cfg = EvaluateParams(device="cpu", bootstrap=50, threshold=0.5, gradcam=0)
    task = MultiLabel(names)
    summary, rows = multilabel.summarise(labels, probs, task, cfg)
    summary["model_sha256"] = "0" * 64
    roc, pr = multilabel.curves(labels, probs, task)
    table = multilabel.predictions_table([f"i{k}" for k in range(60)], labels, probs, task,
                                         summary)
    text = multilabel.render(summary, model="m.pt", model_sha256="0" * 64, plots={},
                             reliability=rows)
    paths = page.PagePaths(tmp_path / "report.html", tmp_path / "figures")
    added = page.write(paths, page.Results(summary, names, rows, roc, pr, table, text),
                       tmp_path / "report.md")
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == {
        "roc", "pr", "confusion", "reliability"}
    assert "Findings: effusion, opacity, nodule" in added and "## Figures" in added
    html = paths.html.read_text(encoding="utf-8")
    assert len(embedded_pngs(html)) == 4 and not re.search(r"https?:", html, re.I)
    assert "<h2>Data</h2>" not in html and "<h2>Training</h2>" not in html


def test_figures_are_the_same_bytes_every_time() -> None:
    rows = [{"class": "opacity", "fpr": f, "tpr": t} for f, t in [(0, 0), (0.2, 0.7), (1, 1)]]
    summary = {"threshold": {"value": 0.4}, "at_threshold": {"sensitivity": 0.7,
                                                             "specificity": 0.8}}
    first = figures.roc(rows, summary)
    assert first == figures.roc(rows, summary) and first.startswith(b"\x89PNG")
    assert figures.roc([], summary) is None


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    from medpipe.evaluation import upstream

    with pytest.raises(PipelineError, match=r"prepare.json: not found; the evaluation "
                                            r"report reads"):
        upstream.read(prepare=tmp_path / "prepare.json")
    (tmp_path / "train" / "plots" / "metrics" / "val").mkdir(parents=True)
    (tmp_path / "train" / "plots" / "metrics" / "val" / "auc.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(PipelineError, match=r"auc.tsv: expected the columns step and auc"):
        upstream.read(live=tmp_path / "train")
