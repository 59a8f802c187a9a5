"""Sharing results through DVC remotes, with real `dvc`, `git`, a bare git repository
and a real OpenSSH server on 127.0.0.1 (tests/sshd.py).

Clone A is the baseline run; it pushes to a directory remote (verify on) and to a bare
git repository, once for the module. Each test starts a fresh clone B from there: the
round trip (B reproduces nothing, and its files equal A's byte for byte), an experiment
shared with `dvc exp push` / `dvc exp pull`, the run cache serving params A ran, the same
over SSH, and the faults (no remote, an unmounted directory, an unreachable or refusing
SSH server, an object missing or corrupted on the remote), where the workspace must be
left as it was."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import Baseline, edit_params, published, sh, stages_run
from sshd import SSHServer, free_port, start_sshd

pytestmark = pytest.mark.slow

UP_TO_DATE = "Data and pipelines are up to date"
OUTPUTS = ("data", "models", "metrics")  # everything the pipeline writes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digests(repo: Path, tops: tuple[str, ...] = OUTPUTS) -> dict[str, str]:
    """sha256 of every file under ``tops`` (the whole workspace but .git and .dvc when
    ``tops`` is empty)."""
    roots = [repo / t for t in tops] if tops else [repo]
    return {str(p.relative_to(repo)): sha256(p.read_bytes())
            for root in roots for p in sorted(root.rglob("*"))
            if p.is_file() and not {".git", ".dvc"} & set(p.relative_to(repo).parts)}


def object_path(files: Path, md5: str) -> Path:
    """Where DVC keeps object ``md5`` under ``files`` (``<remote>/files`` or
    ``.dvc/cache/files``)."""
    return files / "md5" / md5[:2] / md5[2:]


def out_md5(lock: dict, stage: str, path: str) -> str:
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


@dataclass(frozen=True)
class Origin:
    a: Path  # clone A: the baseline run, pushed
    git: Path  # the bare git repository A pushed to
    storage: Path  # the directory remote (DVC remote 'storage', the default)
    exp: str  # an experiment A ran (train.lr=0.01) and shared with `dvc exp push`
    exp_ref: str

    def exp_file(self, path: str) -> bytes:
        """A file as the experiment left it: from git, or from A's cache for DVC outputs."""
        git = subprocess.run(["git", "show", f"{self.exp_ref}:{path}"], cwd=self.a,
                             capture_output=True)
        if git.returncode == 0:
            return git.stdout
        lock = yaml.safe_load(sh("git", "show", f"{self.exp_ref}:dvc.lock", cwd=self.a).stdout)
        md5 = next(out["md5"] for stage in lock["stages"].values()
                   for out in stage.get("outs", []) if out["path"] == path)
        return object_path(self.a / ".dvc/cache/files", md5).read_bytes()


@pytest.fixture(scope="module")
def origin(baseline: Baseline, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    a, git, storage = published(baseline, tmp_path_factory.mktemp("sharing"), verify="true")
    sh("dvc", "push", "--run-cache", cwd=a)
    # An experiment in a temporary workspace (A's stays at main), shared with its
    # outputs and its run-cache entries.
    out = sh("dvc", "exp", "run", "--temp", "-S", "train.lr=0.01", cwd=a).stdout
    exp = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    sh("dvc", "exp", "push", "--run-cache", "origin", exp, cwd=a)
    # ...plus the objects its run-cache entry names that DVC leaves behind (the metrics and
    # plots kept in git): see medpipe.commands.share.push_run_cache_objects.
    sh("python", "-m", "medpipe", "share", "push", "--run-cache", cwd=a)
    refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=a).stdout.split()
    ref = next(r for r in refs if r.endswith(f"/{exp}"))
    return Origin(a, git, storage, exp, ref)


@pytest.fixture
def clone(origin: Origin, tmp_path: Path) -> Path:
    """Clone B: a fresh `git clone`, nothing pulled."""
    b = tmp_path / "B"
    sh("git", "clone", "-q", str(origin.git), str(b), cwd=tmp_path)
    return b


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def share(repo: Path, *args: str) -> tuple[int, str]:
    proc = sh("python", "-m", "medpipe", "share", *args, cwd=repo, check=False)
    return proc.returncode, proc.stderr


def only_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_round_trip_through_a_directory_remote(origin: Origin, clone: Path) -> None:
    sh("dvc", "pull", cwd=clone)
    out = sh("dvc", "repro", cwd=clone).stdout
    assert stages_run(out) == [] and UP_TO_DATE in out
    a, b = digests(origin.a), digests(clone)
    assert "models/model.pt" in b and "data/prepared/train_images.npy" in b
    assert b == a  # model, data, metrics, plots, report: byte for byte


def test_round_trip_over_ssh(origin: Origin, sshd: SSHServer, clone: Path,
                             tmp_path: Path) -> None:
    store = tmp_path / "ssh-store"
    for repo in (origin.a, clone):
        # The server's address differs per test run, so it is local config here; a team
        # commits `dvc remote add ssh ssh://host/path` and keeps key and user local.
        sh("dvc", "remote", "add", "--local", "ssh", sshd.url(store), cwd=repo)
        sh("dvc", "remote", "modify", "--local", "ssh", "keyfile", str(sshd.key), cwd=repo)
        sh("dvc", "remote", "modify", "--local", "ssh", "user", sshd.user, cwd=repo)
        sh("dvc", "remote", "modify", "--local", "ssh", "verify", "true", cwd=repo)
    rc, err = share(origin.a, "push", "-r", "ssh", "--run-cache")
    assert rc == 0, err
    assert (store / "runs").is_dir() and (store / "files" / "md5").is_dir()
    rc, err = share(clone, "pull", "-r", "ssh")
    assert rc == 0, err
    out = sh("dvc", "repro", cwd=clone).stdout
    assert stages_run(out) == [] and UP_TO_DATE in out
    assert digests(clone) == digests(origin.a)


def test_experiment_shared_with_exp_push_and_pull(origin: Origin, clone: Path) -> None:
    out = sh("dvc", "exp", "pull", "origin", origin.exp, cwd=clone)
    assert origin.exp in out.stdout + out.stderr
    sh("dvc", "exp", "apply", origin.exp, cwd=clone)
    assert yaml.safe_load((clone / "params.yaml").read_text())["train"]["lr"] == 0.01
    out = sh("dvc", "repro", cwd=clone).stdout
    assert stages_run(out) == [] and UP_TO_DATE in out
    for path in ("models/model.pt", "metrics/train.json", "metrics/evaluate.json",
                 "metrics/report.md"):
        assert sha256((clone / path).read_bytes()) == sha256(origin.exp_file(path)), path


def test_run_cache_serves_params_that_were_already_run(origin: Origin, clone: Path) -> None:
    """B asks for train.lr=0.01 on main: A ran it (as an experiment) and pushed the run
    cache, so `dvc repro --pull` restores train and evaluate instead of running them."""
    edit_params(clone, train={"lr": 0.01})
    out = sh("dvc", "repro", "--pull", cwd=clone).stdout
    for stage in ("train", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    # crossval's persistent output keeps it out of DVC's run cache; without folds it runs
    # in a moment and trains nothing.
    assert stages_run(out) in ([], ["crossval"])
    for path in ("models/model.pt", "metrics/train.json", "metrics/evaluate.json",
                 "metrics/report.md"):
        assert sha256((clone / path).read_bytes()) == sha256(origin.exp_file(path)), path


def test_no_remote_configured(clone: Path) -> None:
    sh("dvc", "remote", "default", "--unset", cwd=clone)
    before = digests(clone, ())
    rc, err = share(clone, "pull")
    assert rc == 1
    assert "no DVC remote is configured; add one and make it the default: dvc remote add -d" \
        in only_error(err)
    rc, err = share(clone, "check", "-r", "nas")
    assert rc == 1
    assert "remote 'nas' is not defined (defined here: storage)" in only_error(err)
    assert digests(clone, ()) == before


def test_cloud_remote_without_its_plugin(clone: Path) -> None:
    """S3, GCS and Azure need DVC's plugins (dvc-s3, ...), which the project installs only
    with its extras: the message names the extra instead of a traceback."""
    sh("dvc", "remote", "add", "--local", "s3store", "s3://bucket/medpipe", cwd=clone)
    rc, err = share(clone, "check", "-r", "s3store")
    assert rc == 1
    assert "requires 'dvc-s3' to be installed; it comes with the project's extra: uv run " \
        "--extra s3 ... (or uv sync --extra s3)" in only_error(err)


def test_unmounted_directory_remote(clone: Path, tmp_path: Path) -> None:
    gone = tmp_path / "nfs" / "dvc-store"
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(gone), cwd=clone)
    before = digests(clone, ())
    for command in ("pull", "push"):
        rc, err = share(clone, command)
        assert rc == 1
        line = only_error(err)
        assert f"remote 'storage' ({gone}): directory does not exist; mount the share" in line
        assert "dvc remote modify --local storage url" in line
    assert not gone.exists()  # push did not create a stand-in for the share
    assert digests(clone, ()) == before


def test_unreachable_ssh_server(clone: Path) -> None:
    port = free_port()  # nothing listens there
    sh("dvc", "remote", "add", "--local", "dead", f"ssh://127.0.0.1:{port}/store", cwd=clone)
    before = digests(clone, ())
    rc, err = share(clone, "pull", "-r", "dead")
    assert rc == 1
    line = only_error(err)
    assert f"remote 'dead' (ssh://127.0.0.1:{port}/store): cannot connect" in line
    assert "is the server up and the URL right?" in line
    assert digests(clone, ()) == before


def test_wrong_ssh_key(sshd: SSHServer, clone: Path, tmp_path: Path) -> None:
    sh("dvc", "remote", "add", "--local", "ssh", sshd.url(tmp_path), cwd=clone)
    sh("dvc", "remote", "modify", "--local", "ssh", "keyfile", str(sshd.other_key), cwd=clone)
    sh("dvc", "remote", "modify", "--local", "ssh", "user", sshd.user, cwd=clone)
    before = digests(clone, ())
    rc, err = share(clone, "pull", "-r", "ssh")
    assert rc == 1
    line = only_error(err)
    assert f"authentication failed for user '{sshd.user}'" in line
    assert "dvc remote modify --local ssh keyfile" in line
    assert digests(clone, ()) == before
    # DVC itself fails too, and leaves the workspace alone.
    assert sh("dvc", "pull", "-r", "ssh", cwd=clone, check=False).returncode != 0
    assert digests(clone, ()) == before


def broken_copy(origin: Origin, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the remote and, in it, the object of models/model.pt."""
    store = tmp_path / "broken-store"
    shutil.copytree(origin.storage, store)
    lock = yaml.safe_load((origin.a / "dvc.lock").read_text())
    return store, object_path(store / "files", out_md5(lock, "train", "models/model.pt"))


def test_object_missing_on_the_remote(origin: Origin, clone: Path, tmp_path: Path) -> None:
    store, model = broken_copy(origin, tmp_path)
    model.unlink()
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(store), cwd=clone)
    before = digests(clone, ())
    rc, err = share(clone, "pull")
    assert rc == 1
    line = only_error(err)
    assert f"not on remote 'storage' ({store}): models/model.pt; they were never pushed: " \
           "run 'dvc push' in the clone that made them" in line
    assert line.endswith("the workspace was not changed")
    assert digests(clone, ()) == before  # nothing checked out, not even the data


def test_corrupted_object_is_detected_and_not_checked_out(origin: Origin, clone: Path,
                                                          tmp_path: Path) -> None:
    store, model = broken_copy(origin, tmp_path)
    good = model.read_bytes()
    # Bit rot: same size, same (read-only) mode, four bytes flipped. (DVC re-hashes a
    # directory remote's object whose mode is not read-only when it lists the remote, and
    # deletes it there if it does not match: that case ends as "missing".)
    model.chmod(0o644)
    model.write_bytes(good[:1000] + bytes(b ^ 0xFF for b in good[1000:1004]) + good[1004:])
    model.chmod(0o444)
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(store), cwd=clone)
    before = digests(clone, ())
    rc, err = share(clone, "pull")
    assert rc == 1
    line = only_error(err)
    assert f"corrupted on remote 'storage' ({store}) (content does not match its hash): " \
           f"models/model.pt ({model})" in line
    assert digests(clone, ()) == before
    # `verify true` (set in A's committed .dvc/config) is what catches it: plain
    # `dvc pull` fails and does not check the model out either...
    assert sh("dvc", "pull", cwd=clone, check=False).returncode != 0
    assert not (clone / "models/model.pt").exists()
    # ...while a clone with verify off takes the corrupted bytes as the model (and the
    # wrapper, which cannot tell, warns that verify is off).
    other = tmp_path / "C"
    sh("git", "clone", "-q", str(origin.git), str(other), cwd=tmp_path)
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(store), cwd=other)
    sh("dvc", "remote", "modify", "--local", "storage", "verify", "false", cwd=other)
    rc, err = share(other, "pull")
    assert rc == 0, err
    assert "does not verify downloads: a corrupted object would be checked out as valid; " \
           "turn it on: dvc remote modify storage verify true" in err
    assert sha256((other / "models/model.pt").read_bytes()) == sha256(model.read_bytes())
    assert sha256(model.read_bytes()) != sha256(good)
