"""Shared fixtures: a real git + DVC repository holding a copy of this project."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".gto",
                 ".dvc/.gitignore", "data/external/README.md"]
PROJECT_DIRS = ["stages", "medpipe", "recipes"]

# Small enough that a full `dvc repro` takes seconds, large enough to split 3 ways.
SMALL_PARAMS = {
    "data": {"n_per_class": 30, "resolution": 32},
    "prepare": {"image_size": 32},
    # constant lr: the default one-cycle needs more epochs than its 3 of warm-up
    "train": {"epochs": 2, "batch_size": 16, "schedule": "constant", "warmup_epochs": 0},
}


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user's cache folder (downloads outside a project) is a
    scratch folder for the whole run, in this process and the commands it starts."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


def tool_env() -> dict[str, str]:
    """Environment in which `dvc`, `git` and the stages' `python` are this venv's."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "medpipe tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@example.invalid"
    env.pop("PYTHONPATH", None)
    return env


def sh(*cmd: str, cwd: Path, check: bool = True, timeout: float = 600,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (``env``: extra variables); on an unexpected exit code fail with its
    whole output."""
    proc = subprocess.run(cmd, cwd=cwd, env={**tool_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                    f"\n--- stderr\n{proc.stderr}")
    return proc


def kill_at_epoch(cmd: list[str], state: Path, epoch: int, cwd: Path,
                  env: dict[str, str]) -> None:
    """Start ``cmd`` and SIGKILL its whole process group once the training state file
    ``state`` records ``epoch`` finished epochs (within 120 s)."""
    import torch  # only the tests that kill training read its state

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (state.exists() and torch.load(state, weights_only=True)["epoch"] >= epoch):
            assert proc.poll() is None, "training finished before it could be killed"
            assert time.monotonic() < deadline, f"no training state appeared at {state}"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def edit_params(repo: Path, **changes: dict) -> None:
    """Update sections of the repo's params.yaml: edit_params(repo, train={"lr": 0.1})."""
    path = repo / "params.yaml"
    doc = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        doc.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the project into ``dest`` as a fresh git repo with one commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in PROJECT_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    edit_params(dest, **(params if params is not None else SMALL_PARAMS))
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-q", "-m", "project", cwd=dest)
    return dest


def stages_run(output: str) -> list[str]:
    """Names of the stages `dvc repro` / `dvc exp run` executed, in order."""
    return [line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage '")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project, nothing run yet."""
    return make_project(tmp_path / "project")


@dataclass(frozen=True)
class Baseline:
    path: Path
    ran: list[str]  # the stages the first `dvc repro` executed


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """One project reproduced once and committed, shared by the whole test run: read it only."""
    repo = make_project(tmp_path_factory.mktemp("baseline") / "project")
    ran = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "baseline run", cwd=repo)
    return Baseline(repo, ran)


@pytest.fixture
def reproduced(tmp_path: Path, baseline: Baseline) -> Path:
    """A private copy of the baseline (git history, DVC cache and outputs included)."""
    dest = tmp_path / "project"
    shutil.copytree(baseline.path, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """For modules of tiny tensors (``pytestmark = pytest.mark.usefixtures(...)``): on 2
    cores, two intra-op threads contend with the BLAS pool and run 10-50x slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """cli.run configures the root logger and captures warnings: undo that afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def run_stage_cli(name: str, module, argv: list[str], capsys: pytest.CaptureFixture[str]
                  ) -> tuple[int, str]:
    """Run ``module``'s command line in-process; return (exit status, stderr)."""
    from medpipe.utils import cli

    with pytest.raises(SystemExit) as info:
        cli.run(name, module.main, module.get_args_parser(), argv)
        raise SystemExit(0)
    return info.value.code, capsys.readouterr().err


def published(baseline: Baseline, root: Path, **remote: str) -> tuple[Path, Path, Path]:
    """(project, origin, storage): a copy of the baseline project at ``root/A`` whose git
    origin is the bare repository ``root/origin.git`` and whose default DVC remote is the
    folder ``root/storage`` (``remote``: its settings, as `dvc remote modify` takes them),
    committed and pushed to the origin."""
    a, git, storage = root / "A", root / "origin.git", root / "storage"
    shutil.copytree(baseline.path, a, symlinks=True)
    sh("git", "init", "-q", "--bare", "-b", "main", str(git), cwd=root)
    storage.mkdir()
    sh("git", "remote", "add", "origin", str(git), cwd=a)
    sh("dvc", "remote", "add", "-d", "storage", str(storage), cwd=a)
    for key, value in remote.items():
        sh("dvc", "remote", "modify", "storage", key, value, cwd=a)
    sh("git", "commit", "-q", "-am", "DVC remote", cwd=a)
    sh("git", "push", "-q", "origin", "main", cwd=a)
    return a, git, storage
