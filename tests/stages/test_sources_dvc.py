"""Real DVC on a folder dataset outside the repository: ``${data.path}`` is a dependency of
the download stage, so changing one image reruns download and prepare, and nothing else
(an unchanged folder, a touched file) reruns nothing. data/raw stays three files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml
from conftest import edit_params, make_project, sh, stages_run
from imagefiles import make_folder, pixels, save


@pytest.mark.slow
def test_external_folder_is_a_dvc_dependency(tmp_path) -> None:
    images = make_folder(tmp_path / "images", {"normal": 12, "pneumonia": 12})
    repo = make_project(tmp_path / "project")
    edit_params(repo, data={"source": "folder", "path": str(images), "classes": None},
                prepare={"image_size": 8, "workers": 2})
    assert stages_run(sh("dvc", "repro", "prepare", cwd=repo).stdout) == [
        "download", "plan", "prepare"]
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == [
        "dataset.json", "images.zip", "index.csv"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    deps = {d["path"]: d for d in lock["stages"]["download"]["deps"]}
    assert deps[str(images)]["nfiles"] == 24  # the folder is hashed, file by file
    assert "Stage 'prepare' didn't change" in sh("dvc", "repro", "prepare", cwd=repo).stdout
    status = sh("dvc", "status", "prepare", cwd=repo).stdout
    assert "up to date" in status

    # Touching a file changes nothing DVC hashes: nothing reruns.
    os.utime(images / "normal" / "003.png", (1, 1))
    assert stages_run(sh("dvc", "repro", "prepare", cwd=repo).stdout) == []

    # One image with new pixels: download and prepare rerun.
    def store_images() -> list[bytes]:
        return [p.read_bytes() for p in sorted((repo / "data/prepared").glob("*_images.npy"))]

    before = store_images()
    save(images / "normal" / "003.png", np.full((12, 10), 7, dtype=np.uint8))
    assert "modified" in sh("dvc", "status", "download", cwd=repo).stdout
    assert stages_run(sh("dvc", "repro", "prepare", cwd=repo).stdout) == [
        "download", "plan", "prepare"]
    assert store_images() != before  # the new pixels are in one of the splits

    # Putting the old pixels back restores the earlier raw data from the DVC cache.
    save(images / "normal" / "003.png", pixels(3, (12, 10)))
    sh("dvc", "repro", "prepare", cwd=repo)
    assert store_images() == before
