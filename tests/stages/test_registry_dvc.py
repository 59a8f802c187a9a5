"""The model registry, with real `git`, `dvc` and `gto`: dvc.yaml's `artifacts:` block
names the model, `gto register` tags a version, `gto assign` a stage, and a teammate
with nothing but the repository's URL gets that version's bytes with
`dvc artifacts get`, through the directory remote.

Clone A is the baseline run with a directory remote and a bare git repository (its
`origin`). It registers model@v0.0.1, trains again at another learning rate and
registers model@v0.0.2; each `dvc artifacts get` below runs in an empty folder against
the bare repository, which holds no DVC cache, so the bytes can only come from the
remote."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, Baseline, edit_params, published, sh, stages_run

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Registry:
    a: Path  # the clone that trains, registers and pushes
    git: Path  # the bare repository: what a teammate clones
    storage: Path  # the directory remote
    v1: str  # sha256 of models/model.pt registered as v0.0.1
    v2: str  # ... as v0.0.2


@pytest.fixture(scope="module")
def registry(baseline: Baseline, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    a, git, storage = published(baseline, tmp_path_factory.mktemp("registry"))
    sh("dvc", "push", cwd=a)
    sh("gto", "register", "model", "--push", cwd=a)
    v1 = sha256(a / "models/model.pt")
    edit_params(a, train={"lr": 0.01})
    assert "train" in stages_run(sh("dvc", "repro", "train", cwd=a).stdout)
    sh("git", "commit", "-q", "-am", "train.lr 0.01", cwd=a)
    sh("git", "push", "-q", "origin", "main", cwd=a)
    sh("dvc", "push", cwd=a)
    sh("gto", "register", "model", "--push", cwd=a)
    v2 = sha256(a / "models/model.pt")
    assert v1 != v2
    return Registry(a, git, storage, v1, v2)


def get(registry: Registry, where: Path, *args: str) -> Path:
    """`dvc artifacts get <bare repo> model ARGS -o model.pt` in the empty folder
    ``where``; the file it wrote."""
    where.mkdir()
    sh("dvc", "artifacts", "get", str(registry.git), "model", *args, "-o", "model.pt",
       cwd=where)
    return where / "model.pt"


def test_artifacts_block_names_the_model_and_the_fold_ensemble() -> None:
    """The registry shows `meta` as written, so it must describe what the default params
    make: the committed metrics/prepare.json and the synthetic source's default classes
    are that description."""
    from medpipe.data import phantoms

    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    prepared = json.loads((ROOT / "metrics/prepare.json").read_text(encoding="utf-8"))
    outs = {out if isinstance(out, str) else next(iter(out))
            for stage in doc["stages"].values() for out in stage.get("outs", [])}
    assert set(doc["artifacts"]) == {"model", "folds"}
    for name, path in [("model", "models/model.pt"), ("folds", "models/folds")]:
        artifact = doc["artifacts"][name]
        assert artifact["path"] == path and path in outs  # a DVC output: pushed, pulled
        assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]
        meta = artifact["meta"]
        assert meta["task"] == "multiclass" and meta["classes"] == list(
            phantoms.DEFAULT_CLASSES) and prepared["classes"] == len(meta["classes"])
        side = prepared["image_size"]
        assert meta["input_size"] == [prepared["channels"], side, side]


def test_registered_versions_are_fetched_through_the_remote(registry: Registry,
                                                            tmp_path: Path) -> None:
    tags = sh("git", "tag", "-n1", cwd=registry.git).stdout
    assert "model@v0.0.1" in tags and "model@v0.0.2" in tags
    # The name is `model`: dvc.yaml is at the repository root. (`dvc.yaml:model` is
    # refused: DVC reads it as the artifact ':model', which no tag names.)
    assert sha256(get(registry, tmp_path / "one", "--rev", "v0.0.1")) == registry.v1
    assert sha256(get(registry, tmp_path / "two", "--rev", "v0.0.2")) == registry.v2
    assert sha256(get(registry, tmp_path / "latest")) == registry.v2
    url = sh("dvc", "artifacts", "get", str(registry.git), "model", "--rev", "v0.0.1",
             "--show-url", cwd=tmp_path).stdout.strip()
    assert Path(url).is_relative_to(registry.storage) and sha256(Path(url)) == registry.v1
    wrong = sh("dvc", "artifacts", "get", str(registry.git), "dvc.yaml:model", "--rev",
               "v0.0.1", cwd=tmp_path, check=False)
    assert wrong.returncode != 0


def test_stages_promote_a_version(registry: Registry, tmp_path: Path) -> None:
    a = registry.a
    sh("gto", "assign", "model", "--version", "v0.0.1", "--stage", "prod", "--push", cwd=a)
    sh("gto", "assign", "model", "--version", "v0.0.2", "--stage", "staging", "--push", cwd=a)
    shown = json.loads(sh("gto", "show", "--json", cwd=a).stdout)
    assert shown["model"]["version"] == "v0.0.2"
    assert shown["model"]["stage"] == {"dev": None, "staging": "v0.0.2", "prod": "v0.0.1"}
    table = sh("gto", "show", "model", cwd=a).stdout
    assert "prod" in table and "staging" in table
    assert sha256(get(registry, tmp_path / "prod", "--stage", "prod")) == registry.v1
    assert sha256(get(registry, tmp_path / "staging", "--stage", "staging")) == registry.v2
    # .gto allows dev, staging and prod only.
    qa = sh("gto", "assign", "model", "--version", "v0.0.2", "--stage", "qa", cwd=a,
            check=False)
    assert qa.returncode != 0 and "Allowed stages" in qa.stdout + qa.stderr
