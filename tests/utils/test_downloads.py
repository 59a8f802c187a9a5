"""medpipe.utils.downloads against a real HTTP server on 127.0.0.1: progress, resume, servers that
ignore Range, HTTP and network errors, timeouts and checksum mismatches."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from localhttp import local_server

from medpipe import PipelineError
from medpipe.utils import downloads

BODY = os.urandom(300_000)
MD5 = hashlib.md5(BODY).hexdigest()
SHA256 = hashlib.sha256(BODY).hexdigest()
HALF = len(BODY) // 2


@pytest.fixture
def server():
    with local_server() as s:
        yield s


def fetch(url: str, tmp_path: Path, **kw) -> Path:
    kw.setdefault("md5", MD5)
    kw.setdefault("retry_wait", 0.0)
    return downloads.fetch(url, tmp_path / "out" / "data.bin", cache_dir=tmp_path / "cache",
                          **kw)


def parts(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("*.part"))


def test_success_writes_verified_file_with_progress(server, tmp_path, capsys) -> None:
    url = server.serve("/files/data.bin", BODY)
    dest = fetch(url + "?download=1", tmp_path, sha256=SHA256, progress=True)
    assert dest.read_bytes() == BODY
    assert [r.range for r in server.requests] == [None]
    err = capsys.readouterr().err
    assert "data.bin" in err and "100%" in err  # the tqdm bar ran to the end
    assert parts(tmp_path) == []  # the partial file became the destination


def test_truncated_transfer_is_resumed_with_a_range_request(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY, cut_after=HALF)
    dest = fetch(url, tmp_path)
    assert dest.read_bytes() == BODY
    assert [(r.range, r.status) for r in server.requests] == [
        (None, 200), (f"bytes={HALF}-", 206)]


def test_partial_file_survives_a_failed_run_and_the_next_run_resumes(server, tmp_path) -> None:
    """What `dvc repro` after a killed or failed download relies on."""
    url = server.serve("/data.bin", BODY, cut_after=HALF)
    with pytest.raises(PipelineError) as info:
        fetch(url, tmp_path, attempts=1)
    message = str(info.value)
    assert url in message and f"after {HALF} of {len(BODY)} bytes" in message
    assert "next run resumes" in message
    assert not (tmp_path / "out" / "data.bin").exists()
    (part,) = parts(tmp_path)
    assert part.read_bytes() == BODY[:HALF]
    assert str(part) in message
    dest = fetch(url, tmp_path)  # a new run
    assert dest.read_bytes() == BODY
    assert server.requests[-1].range == f"bytes={HALF}-"
    assert server.requests[-1].status == 206
    assert parts(tmp_path) == []


def test_server_that_ignores_range_is_read_from_the_start(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY, cut_after=HALF, ranges=False)
    dest = fetch(url, tmp_path)
    assert dest.read_bytes() == BODY  # not the first half twice
    assert [(r.range, r.status) for r in server.requests] == [
        (None, 200), (f"bytes={HALF}-", 200)]


def test_stalled_transfer_times_out_and_resumes(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY, stall_after=HALF, stall_seconds=2.0)
    dest = fetch(url, tmp_path, timeout=0.5)
    assert dest.read_bytes() == BODY
    assert server.requests[-1].range == f"bytes={HALF}-"


def test_stalled_transfer_that_never_recovers_names_url_and_timeout(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY, stall_after=1000, stall_seconds=2.0,
                       faulty_requests=99)
    with pytest.raises(PipelineError) as info:
        fetch(url, tmp_path, timeout=0.3, attempts=2)
    message = str(info.value)
    assert url in message and "timed out after 0.3 s" in message and "after 2 attempts" in message
    assert "the 2000 bytes received are kept" in message  # 1000 per attempt


def test_partial_file_longer_than_the_file_is_restarted(server, tmp_path) -> None:
    """The server answers 416 to a resume past its end; the download starts over."""
    url = server.serve("/data.bin", BODY)
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f"{downloads._key(url)}.part"
    stale.write_bytes(b"x" * (len(BODY) + 10))
    assert fetch(url, tmp_path).read_bytes() == BODY
    assert [r.status for r in server.requests] == [416, 200]


def test_complete_partial_file_is_verified_not_downloaded_again(server, tmp_path) -> None:
    """A run killed between the last byte and the check leaves a whole .part file."""
    url = server.serve("/data.bin", BODY)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{downloads._key(url)}.part").write_bytes(BODY)
    assert fetch(url, tmp_path).read_bytes() == BODY
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(BODY)}-", 416)]


def test_http_404_names_url_and_status(server, tmp_path) -> None:
    url = server.url("/missing.npz")
    with pytest.raises(PipelineError) as info:
        fetch(url, tmp_path)
    message = str(info.value)
    assert message.startswith(url) and "HTTP 404" in message and "\n" not in message
    assert len(server.requests) == 1  # a missing file is not worth retrying


def test_http_500_is_retried_then_names_url_and_status(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY, status=500, faulty_requests=99)
    with pytest.raises(PipelineError) as info:
        fetch(url, tmp_path, attempts=3)
    message = str(info.value)
    assert message.startswith(url) and "HTTP 500" in message and "after 3 attempts" in message
    assert len(server.requests) == 3
    assert not (tmp_path / "out" / "data.bin").exists()


def test_transient_503_is_retried(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY, status=503, faulty_requests=2)
    assert fetch(url, tmp_path, attempts=3).read_bytes() == BODY
    assert [r.status for r in server.requests] == [503, 503, 200]


def test_md5_mismatch_deletes_the_file_and_names_both_digests(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY)
    wrong = "0" * 32
    with pytest.raises(PipelineError) as info:
        fetch(url, tmp_path, md5=wrong)
    message = str(info.value)
    assert url in message and "MD5 mismatch" in message
    assert f"expected {wrong}" in message and f"got {MD5}" in message
    assert not (tmp_path / "out" / "data.bin").exists()
    assert parts(tmp_path) == []  # nothing a later run would resume or trust


def test_sha256_mismatch_is_refused(server, tmp_path) -> None:
    url = server.serve("/data.bin", BODY)
    with pytest.raises(PipelineError, match=f"SHA256 mismatch: expected {'f' * 64}, got {SHA256}"):
        fetch(url, tmp_path, sha256="f" * 64)


def test_connection_refused_names_url(tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(PipelineError) as info:
        fetch(url, tmp_path)
    message = str(info.value)
    assert message.startswith(url) and "cannot connect" in message and "refused" in message


def test_file_url_is_copied_and_verified(tmp_path) -> None:
    src = tmp_path / "mirror" / "data file.bin"
    src.parent.mkdir()
    src.write_bytes(BODY)
    dest = fetch(src.as_uri(), tmp_path)
    assert dest.read_bytes() == BODY


def test_missing_file_url_names_url(tmp_path) -> None:
    url = (tmp_path / "nope.npz").as_uri()
    with pytest.raises(PipelineError, match=f"^{url}: file not found$"):
        fetch(url, tmp_path)


@pytest.mark.parametrize("url", ["ftp://example.org/x.npz", "/data/x.npz", "zenodo.org/x"])
def test_other_schemes_are_refused(url: str, tmp_path) -> None:
    with pytest.raises(PipelineError, match="must be an http://, https:// or file:// URL"):
        fetch(url, tmp_path)


def test_default_cache_dir_is_outside_outputs(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(downloads.CACHE_ENV, raising=False)
    (tmp_path / "project" / ".dvc").mkdir(parents=True)
    assert downloads.default_cache_dir(tmp_path / "project") == (
        tmp_path / "project" / ".dvc" / "tmp" / "downloads")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert downloads.default_cache_dir(tmp_path) == tmp_path / "xdg" / "medpipe" / "downloads"
    monkeypatch.setenv(downloads.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert downloads.default_cache_dir(tmp_path / "project") == tmp_path / "elsewhere"
