"""Sharing through a DVC remote, with faults explained: ``dvc push`` / ``dvc pull`` plus
checks that say what is wrong and what to run, and a pull that never half-updates the
workspace.

    medpipe share check [-r REMOTE]              # is the remote usable?
    medpipe share push  [-r REMOTE] [--run-cache]
    medpipe share pull  [-r REMOTE] [--run-cache]

DVC does the transfers (``dvc push``, ``dvc fetch``, ``dvc checkout``, with their usual
output); this module only adds what DVC leaves unclear:

- before anything moves, the remote is probed through DVC's own filesystem: no remote
  configured, an unknown remote name, a directory remote whose directory is absent (an
  NFS share that is not mounted: ``dvc push`` would silently create a local directory in
  its place), an SSH server that refuses the connection or rejects the key: each is
  one line naming the remote and the command that fixes it;
- ``push --run-cache`` also pushes the objects that the run-cache entries name, which
  ``dvc push --run-cache`` leaves behind for runs other than the current one (see
  :func:`push_run_cache_objects`), so a teammate's ``dvc repro`` restores those runs;
- ``pull`` is ``dvc fetch`` (the cache only), then a check that every object the
  workspace needs arrived, then ``dvc checkout``. An object missing on the remote, or one
  whose bytes do not match its hash there (caught by the remote's ``verify`` option), is
  named with its remote path and the workspace is left exactly as it was; plain
  ``dvc pull`` would check out the rest and call the missing object "not existing
  neither locally nor on remote" even when it exists but is corrupted.

Reads the DVC configuration (``.dvc/config``, ``.dvc/config.local``) of the project in
the current directory; writes only what ``dvc`` itself writes (the cache, the workspace).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medpipe import PipelineError, error_line

log = logging.getLogger(__name__)


@contextmanager
def open_repo(root: Path):
    """The DVC project at ``root`` through DVC's API (closed afterwards)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise PipelineError(f"{root}: not inside a DVC project (run this in the clone)") from None
    try:
        yield repo
    finally:
        repo.close()


def describe(remote: Any) -> str:
    """``remote 'name' (url)`` for messages."""
    return f"remote '{remote.name}' ({remote.fs.unstrip_protocol(remote.path)})"


def get_remote(repo: Any, name: str | None) -> Any:
    """DVC's remote ``name`` (the default one when None); a config fault is a PipelineError."""
    from dvc.config import NoRemoteError, RemoteNotFoundError

    try:
        return repo.cloud.get_remote(name)
    except NoRemoteError:
        raise PipelineError(
            "no DVC remote is configured; add one and make it the default: "
            "dvc remote add -d storage <url> (see docs/sharing.md)") from None
    except RemoteNotFoundError:
        known = ", ".join(sorted(repo.config.get("remote", {}))) or "none"
        raise PipelineError(f"remote '{name}' is not defined (defined here: {known}); "
                            "see: dvc remote list") from None
    except ImportError as e:  # "s3 is supported, but requires 'dvc-s3' to be installed"
        plugin = re.search(r"'dvc-(\w+)'", str(e))
        extra = (f"; it comes with the project's extra: uv run --extra {plugin.group(1)} ..."
                 f" (or uv sync --extra {plugin.group(1)})") if plugin else ""
        raise PipelineError(f"remote '{name or 'default'}': {error_line(e)}{extra}") from None


def probe(repo: Any, name: str | None, *, for_push: bool = False) -> Any:
    """Return the remote after checking that it can be reached and read.

    A directory remote must exist for push too: when an NFS share is not mounted, the
    remote's directory in it is absent, and ``dvc push`` would create it on the local
    disk and report success."""
    remote = get_remote(repo, name)
    where = describe(remote)
    protocol = remote.fs.protocol
    protocol = protocol[0] if isinstance(protocol, tuple) else protocol
    try:
        exists = remote.fs.exists(remote.path)
    except Exception as e:  # the SSH, cloud and network libraries raise their own types
        raise PipelineError(f"{where}: {explain_connection_error(e, remote, protocol)}") from None
    if not exists and protocol == "local":
        raise PipelineError(
            f"{where}: directory does not exist; mount the share, or create the directory "
            f"once (mkdir -p {remote.path}), or point the remote elsewhere: "
            f"dvc remote modify --local {remote.name} url <path>")
    if not exists and not for_push:
        raise PipelineError(f"{where}: nothing there yet; run 'dvc push' (or "
                            "'medpipe share push') from the clone that has the data")
    return remote


def explain_connection_error(e: BaseException, remote: Any, protocol: str) -> str:
    """One line saying why a remote could not be reached and what to change."""
    name = remote.name
    kind = type(e).__name__  # asyncssh's types, without importing it for other remotes
    if kind == "PermissionDenied" or (protocol == "ssh" and isinstance(e, PermissionError)):
        # an SSH login refused (sshfs turns asyncssh's PermissionDenied into PermissionError)
        user = (getattr(remote.fs, "fs_args", {}) or {}).get("username") or getpass.getuser()
        return (f"authentication failed for user '{user}' ({error_line(e)}); give DVC a key "
                f"the server accepts: dvc remote modify --local {name} keyfile <private key> "
                f"(and, if the login differs: dvc remote modify --local {name} user <login>)")
    if isinstance(e, PermissionError):
        return f"permission denied ({error_line(e)}); check the owner and mode of the remote"
    if isinstance(e, socket.gaierror):
        return (f"cannot resolve the host ({error_line(e)}); fix the URL: "
                f"dvc remote modify {name} url <url>")
    if isinstance(e, (ConnectionError, TimeoutError, OSError)) or kind == "ConnectionLost":
        detail = e.strerror if isinstance(e, OSError) and e.strerror else error_line(e)
        return (f"cannot connect ({detail}); is the server up and the URL right? "
                f"fix it with: dvc remote modify {name} url <url>")
    return error_line(e)


def dvc(*args: str, cwd: Path) -> int:
    """Run ``dvc args`` with its output shown; return its exit status."""
    cmd = [str(Path(sys.executable).parent / "dvc"), *args]
    if not Path(cmd[0]).exists():
        cmd[0] = "dvc"
    log.info("$ dvc %s", " ".join(args))
    return subprocess.call(cmd, cwd=cwd)


def not_in_cache(root: Path) -> list[str]:
    """Workspace outputs (files, granular) whose objects are not in the local cache."""
    with open_repo(root) as repo:
        return sorted(repo.data_status(granular=True).get("not_in_cache", []))


def explain_missing(root: Path, name: str | None, paths: list[str]) -> str:
    """Why each of ``paths`` did not arrive: absent on the remote, or present there but
    rejected by verification (corrupted)."""
    with open_repo(root) as repo:
        remote = get_remote(repo, name)
        index = repo.index.data["repo"]
        absent, corrupted = [], []
        for path in paths:
            entry = index.get(tuple(p for p in path.split("/") if p))
            oid = entry.hash_info.value if entry is not None and entry.hash_info else None
            if oid and remote.odb.exists(oid):
                corrupted.append(f"{path} ({remote.odb.oid_to_path(oid)})")
            else:
                absent.append(path)
        where = describe(remote)
    parts = []
    if absent:
        parts.append(f"not on {where}: {', '.join(absent)}; they were never pushed: run "
                     "'dvc push' in the clone that made them (or 'dvc repro' here to "
                     "recompute)")
    if corrupted:
        parts.append(f"corrupted on {where} (content does not match its hash): "
                     f"{', '.join(corrupted)}; delete that object on the remote, then run "
                     "'dvc push' from a clone with a good copy")
    return "; ".join(parts) + "; the workspace was not changed"


def pull(root: Path, name: str | None, *, run_cache: bool = False) -> None:
    """Fetch into the cache, check that everything arrived, then check out."""
    with open_repo(root) as repo:
        remote = probe(repo, name)
        if not remote.odb.verify:
            log.warning("%s does not verify downloads: a corrupted object would be checked "
                        "out as valid; turn it on: dvc remote modify %s verify true",
                        describe(remote), remote.name)
    target = ["-r", name] if name else []
    rc = dvc("fetch", *target, *(["--run-cache"] if run_cache else []), cwd=root)
    missing = not_in_cache(root)
    if missing:
        raise PipelineError(explain_missing(root, name, missing))
    if rc != 0:
        raise PipelineError(f"dvc fetch failed (exit {rc}, see above); the workspace was "
                            "not changed")
    rc = dvc("checkout", cwd=root)
    if rc != 0:
        raise PipelineError(f"dvc checkout failed (exit {rc}, see above)")


def push(root: Path, name: str | None, *, run_cache: bool = False) -> None:
    """Probe the remote, then ``dvc push``; with ``run_cache``, also the objects that the
    run-cache entries name."""
    with open_repo(root) as repo:
        probe(repo, name, for_push=True)
    target = ["-r", name] if name else []
    rc = dvc("push", *target, *(["--run-cache"] if run_cache else []), cwd=root)
    if rc != 0:
        raise PipelineError(f"dvc push failed (exit {rc}, see above); test the remote "
                            "with: medpipe share check")
    if run_cache:
        push_run_cache_objects(root, name)


def push_run_cache_objects(root: Path, name: str | None) -> int:
    """Push every object that a local run-cache entry names; return how many were sent.

    ``dvc push --run-cache`` sends the entries (``.dvc/cache/runs``) but only the objects of
    the revision being pushed. An entry of another run (an experiment, old params) also
    names the outputs that stay in git (``cache: false`` metrics and plots, which DVC
    copies into the cache for the run cache); without them a teammate's ``dvc repro``
    finds the entry, cannot restore it ("Some of the cache files do not exist neither
    locally nor on remote") and recomputes the stage."""
    with open_repo(root) as repo:
        runs = Path(repo.stage_cache.cache_dir)
        entries = [(p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file()]
        used = repo.stage_cache.get_used_objs(entries)
        objects = {h for objs in used.values() for h in objs}
        result = repo.cloud.push(objects, remote=name)
    if result.failed:  # e.g. removed from this cache by `dvc gc`: those runs will rerun
        log.warning("run cache: %d objects it names could not be pushed (not in this "
                    "cache?); a teammate's repro of those runs recomputes them",
                    len(result.failed))
    log.info("run cache: %d entries; %d of the %d objects they name were not on the remote "
             "yet and were pushed", len(entries), len(result.transferred), len(objects))
    return len(result.transferred)


def check(root: Path, name: str | None) -> None:
    with open_repo(root) as repo:
        remote = probe(repo, name)
        log.info("%s: reachable (verify downloads: %s)", describe(remote),
                 "on" if remote.odb.verify else "off")


def main(args: argparse.Namespace) -> None:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # it logs every SSH packet step
    root = Path.cwd()
    if args.command == "check":
        check(root, args.remote)
    elif args.command == "push":
        push(root, args.remote, run_cache=args.run_cache)
    else:
        pull(root, args.remote, run_cache=args.run_cache)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medpipe share", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["check", "push", "pull"])
    p.add_argument("-r", "--remote", default=None, help="DVC remote (default: the default)")
    p.add_argument("--run-cache", action="store_true",
                   help="also transfer the run cache (stages already run with other params)")
    return p
