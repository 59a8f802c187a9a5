"""Fetch one file over HTTP(S) or from a ``file://`` URL, resumably, and verify its digest.

The bytes stream into ``<cache_dir>/<key>.part``; a dropped connection or a timeout leaves
that partial file in place, and the next attempt (in this run or a later one) asks the
server for the rest with a ``Range`` request. Only a file whose length and digest check
out is moved to its destination; a file whose digest is wrong is deleted.

The partial file must not live inside a DVC output: DVC deletes a stage's outputs before
running it, which would throw away what a killed run had already downloaded. The default
is ``.dvc/tmp/downloads`` of the project (see ``default_cache_dir``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from medpipe import PipelineError
from medpipe.utils.files import file_digest
from medpipe.utils.progress import Tracker

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read per step
CACHE_ENV = "MEDPIPE_DOWNLOAD_CACHE"  # overrides where partial downloads are kept
SCHEMES = ("http", "https", "file")
# Statuses worth another attempt: the server or a proxy is overloaded or restarting.
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class _Incomplete(Exception):
    """The transfer stopped early; what arrived is in the .part file and can be resumed."""


def default_cache_dir(cwd: Path | None = None) -> Path:
    """Where partial downloads live: ``$MEDPIPE_DOWNLOAD_CACHE``, else the project's
    ``.dvc/tmp/downloads`` (DVC runs stages from the project root), else
    ``~/.cache/medpipe/downloads`` outside a DVC project."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    cwd = Path() if cwd is None else cwd  # relative: shorter paths in messages
    if (cwd / ".dvc").is_dir():
        # Git- and DVC-ignored, not an output, and on the same file system as data/,
        # so the finished file is renamed into place rather than copied.
        return cwd / ".dvc" / "tmp" / "downloads"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medpipe" / "downloads"


def check_url(url: str, what: str = "url") -> str:
    """Return the scheme of ``url``; anything but http, https or file is a PipelineError."""
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in SCHEMES:
        raise PipelineError(
            f"{what} '{url}' must be an http://, https:// or file:// URL"
        )
    return scheme



def fetch(
    url: str,
    dest: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    cache_dir: Path | str | None = None,
    timeout: float = 60.0,
    attempts: int = 4,
    retry_wait: float = 2.0,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest``, verified against ``md5`` and/or ``sha256``.

    Transfers that stop early are resumed up to ``attempts`` times (waiting
    ``retry_wait`` s, doubling); servers that ignore ``Range`` are read again from the
    start. ``timeout`` bounds connecting and each wait for data, not the whole transfer.
    ``sha256_prefix``: the leading hex digits of the SHA-256 (the convention of torch.hub
    file names), for files whose full digest is not published.
    ``progress``: None shows a progress bar on a terminal and timestamped log lines
    elsewhere (:mod:`medpipe.utils.progress`); True forces the bar, False shows nothing.
    Every failure is a one-line PipelineError naming the URL.
    """
    dest = Path(dest)
    check_url(url)
    expected = {a: d.lower() for a, d in (("md5", md5), ("sha256", sha256)) if d}
    prefix = sha256_prefix.lower() if sha256_prefix else None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    part = cache / f"{_key(url)}.part"
    with _locked(part.with_suffix(".lock"), url):
        for attempt in range(1, attempts + 1):
            try:
                _transfer(url, part, timeout, progress)
                break
            except _Incomplete as e:
                have = part.stat().st_size if part.exists() else 0
                if attempt == attempts:
                    kept = (f"; the {have} bytes received are kept in {part} and the next "
                            f"run resumes from there") if have else ""
                    raise PipelineError(f"{url}: {e} (after {attempts} attempts){kept}") from None
                wait = retry_wait * 2 ** (attempt - 1)
                log.warning("%s: %s; resuming from byte %d in %.0f s (attempt %d of %d)",
                            url, e, have, wait, attempt + 1, attempts)
                time.sleep(wait)
        _verify(url, part, expected, prefix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(part, dest)
    return dest


def _verify(url: str, part: Path, expected: dict[str, str], prefix: str | None) -> None:
    """Check the downloaded ``part`` against every digest given; delete it on a mismatch."""
    checks = [(a, w, False) for a, w in expected.items()]
    if prefix:
        checks.append(("sha256", prefix, True))
    for algorithm, want, is_prefix in checks:
        got = file_digest(part, algorithm)
        if not (got.startswith(want) if is_prefix else got == want):
            part.unlink()  # never leave bad bytes where a later run would resume them
            raise PipelineError(
                f"{url}: {algorithm.upper()} mismatch: expected {want}, got {got}; "
                f"the downloaded file was deleted"
            )
    if not checks:
        log.warning("%s: no checksum given; the file is not verified", url)


def _key(url: str) -> str:
    # One partial file per URL; the readable tail helps whoever looks in the cache.
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


@contextlib.contextmanager
def _locked(lock_path: Path, url: str) -> Iterator[None]:
    """Hold an exclusive lock so two processes never append to the same .part file."""
    try:
        import fcntl
    except ImportError:  # not POSIX: go without
        yield
        return
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is downloading it; waiting", url)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _transfer(url: str, part: Path, timeout: float, progress: bool | None) -> None:
    """Append the rest of ``url`` to ``part``; raise _Incomplete if it stops early."""
    offset = part.stat().st_size if part.exists() else 0
    if urllib.parse.urlparse(url).scheme.lower() == "file":
        _copy_file(url, part, offset, progress)
        return
    headers = {"Accept-Encoding": "identity", "User-Agent": "medpipe"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            total = re.fullmatch(r"\s*bytes \*/(\d+)\s*", e.headers.get("Content-Range", ""))
            if total and int(total.group(1)) == offset:
                return  # a run killed before verifying had it all; the digest decides
            # Our partial file is not a prefix the server can continue: start again.
            log.warning("%s: server refused to resume at byte %d; restarting", url, offset)
            part.unlink()
            raise _Incomplete("range not satisfiable") from None
        if e.code in RETRY_STATUS:
            raise _Incomplete(f"HTTP {e.code} {e.reason}") from None
        raise PipelineError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise _Incomplete(f"timed out after {timeout:g} s") from None
        if isinstance(e.reason, (ConnectionResetError, ConnectionAbortedError)):
            raise _Incomplete(_reason(e.reason)) from None
        raise PipelineError(f"{url}: cannot connect ({_reason(e.reason)})") from None
    except TimeoutError:
        raise _Incomplete(f"timed out after {timeout:g} s") from None
    except (ConnectionError, http.client.HTTPException) as e:
        raise _Incomplete(_reason(e)) from None
    with resp:
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if offset and resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                raise _Incomplete(f"asked for byte {offset} on, got Content-Range "
                                  f"'{resp.headers.get('Content-Range')}'; restarting")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the range request; restarting from zero", url)
            offset, mode = 0, "wb"
        total = offset + remaining if remaining is not None else None
        _stream(resp, part, mode, offset, total, url, timeout, progress)


def _stream(src: BinaryIO, part: Path, mode: str, offset: int, total: int | None, url: str,
            timeout: float, progress: bool | None) -> None:
    """Copy ``src`` into ``part`` with a progress bar; check the length at the end."""
    name = Path(urllib.parse.urlparse(url).path).name or url
    got = offset
    with open(part, mode) as out, Tracker(total, name, unit="B", initial=offset,
                                           unit_scale=True, bar=progress,
                                           log_lines=progress is not False) as bar:
        try:
            # read1: what has arrived, so a timeout loses nothing already received.
            while block := src.read1(CHUNK):
                out.write(block)
                got += len(block)
                bar.update(len(block))
        except TimeoutError:
            raise _Incomplete(f"timed out after {timeout:g} s without data") from None
        except (ConnectionError, http.client.IncompleteRead) as e:
            raise _Incomplete(f"connection lost after {got} bytes ({_reason(e)})") from None
        finally:
            out.flush()
            os.fsync(out.fileno())
    if total is not None and got != total:
        if got > total:
            part.unlink()
            raise PipelineError(f"{url}: received {got} bytes, more than the {total} announced")
        raise _Incomplete(f"connection closed after {got} of {total} bytes")


def _copy_file(url: str, part: Path, offset: int, progress: bool | None) -> None:
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    try:
        src = open(path, "rb")  # noqa: SIM115 (closed by the with below; errors differ)
    except FileNotFoundError:
        raise PipelineError(f"{url}: file not found") from None
    except OSError as e:
        raise PipelineError(f"{url}: cannot read ({e.strerror})") from None
    with src:
        size = os.fstat(src.fileno()).st_size
        if offset > size:
            offset = 0
        src.seek(offset)
        _stream(src, part, "ab" if offset else "wb", offset, size, url, 0.0, progress)


def _range_start(content_range: str) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", content_range)
    return int(m.group(1)) if m else None


def _reason(e: object) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
