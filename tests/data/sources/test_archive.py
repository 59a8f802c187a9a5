"""Dataset archives: members that would escape the destination are refused naming the
member; the SHA-256 is checked before anything is extracted; a good archive served over
HTTP becomes the same packed dataset as the folder it was made from."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from imagefiles import data_cfg, make_folder
from localhttp import local_server

from medpipe import PipelineError
from medpipe.data.sources import archive, pack
from medpipe.data.sources.registry import read
from stages.download import download


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "download-cache"
    monkeypatch.setenv("MEDPIPE_DOWNLOAD_CACHE", str(path))
    return path


def tar_bytes(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            body = (data or {}).get(m.name)
            if body is not None:
                m.size = len(body)
            tar.addfile(m, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    return m


def zip_bytes(entries: list[tuple[str, bytes, bool]]) -> bytes:
    """(name, data, is_symlink) entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, symlink in entries:
            info = zipfile.ZipInfo(name)
            if symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize(("members", "expected"), [
    ([tar_member("../evil.png")], "member '../evil.png' has a '..' path component"),
    ([tar_member("a/../../evil.png")], "member 'a/../../evil.png' has a '..' path component"),
    ([tar_member("/etc/evil.png")], "member '/etc/evil.png' has an absolute path"),
    ([tar_member("a/link.png", tarfile.SYMTYPE, "../../outside.png")],
     "member 'a/link.png' is a symbolic link to '../../outside.png', outside the archive"),
    ([tar_member("a/link.png", tarfile.SYMTYPE, "/etc/passwd")],
     "member 'a/link.png' is a symbolic link to the absolute path '/etc/passwd'"),
    ([tar_member("a/hard.png", tarfile.LNKTYPE, "../outside.png")],
     "member 'a/hard.png' is a hard link to '../outside.png', outside the archive"),
    ([tar_member("a/fifo", tarfile.FIFOTYPE)],
     "member 'a/fifo' is not a regular file, folder or link"),
])
def test_tar_members_escaping_are_refused(tmp_path, members, expected) -> None:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(tar_bytes(members))
    with pytest.raises(PipelineError) as info:
        archive.extract(path, tmp_path / "out", "http://host/x.tar.gz")
    assert str(info.value) == f"http://host/x.tar.gz: {expected}; refused"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("entries", "expected"), [
    ([("../evil.png", b"x", False)], "member '../evil.png' has a '..' path component"),
    ([("/abs/evil.png", b"x", False)], "member '/abs/evil.png' has an absolute path"),
    ([("C:/evil.png", b"x", False)], "member 'C:/evil.png' has an absolute path"),
    ([("a/l.png", b"../../x.png", True)], "member 'a/l.png' is a symbolic link to "
                                          "'../../x.png', outside the archive"),
])
def test_zip_members_escaping_are_refused(tmp_path, entries, expected) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(zip_bytes(entries))
    with pytest.raises(PipelineError, match="^x.zip: " + expected.replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.")):
        archive.extract(path, tmp_path / "out", "x.zip")
    assert not (tmp_path / "out").exists()


def test_links_inside_the_archive_are_followed(tmp_path) -> None:
    members = [tar_member("d/a/real.png"), tar_member("d/b/link.png", tarfile.SYMTYPE,
                                                      "../a/real.png")]
    path = tmp_path / "x.tar.gz"
    path.write_bytes(tar_bytes(members, {"d/a/real.png": b"PNGDATA"}))
    archive.extract(path, tmp_path / "t", "x")
    assert (tmp_path / "t/d/b/link.png").read_bytes() == b"PNGDATA"
    path = tmp_path / "x.zip"
    path.write_bytes(zip_bytes([("a/real.png", b"PNGDATA", False),
                                ("b/link.png", b"../a/real.png", True)]))
    archive.extract(path, tmp_path / "z", "x")
    assert (tmp_path / "z/b/link.png").read_bytes() == b"PNGDATA"


def test_not_an_archive(tmp_path) -> None:
    (tmp_path / "x.zip").write_bytes(b"plain text")
    with pytest.raises(PipelineError, match=r"^u: not a .zip or .tar.gz archive$"):
        archive.extract(tmp_path / "x.zip", tmp_path / "out", "u")


def folder_archive(folder: Path, kind: str) -> bytes:
    buf = io.BytesIO()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, f"dataset/{p.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(folder, arcname="dataset")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_over_http_is_verified_and_packed(tmp_path, cache, kind) -> None:
    folder = make_folder(tmp_path / "images", {"normal": 4, "pneumonia": 3}, split="train")
    make_folder(folder, {"normal": 2, "pneumonia": 2}, split="test", seed=1)
    body = folder_archive(folder, kind)
    sha = hashlib.sha256(body).hexdigest()
    with local_server() as server:
        url = server.serve(f"/data.{kind}", body)
        download(data_cfg(url=url, sha256=sha.upper()), tmp_path / "raw")
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["dataset.json", "images.zip", "index.csv"]
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["classes"] == ["normal", "pneumonia"] and meta["splits"] == {
        "train": 7, "val": 0, "test": 4}
    # The same images from the local folder give the very same raw files.
    download(data_cfg(path=str(folder)), tmp_path / "raw-local")
    for name in ("images.zip", "index.csv", "dataset.json"):
        assert (raw / name).read_bytes() == (tmp_path / "raw-local" / name).read_bytes()
    data = read(raw)
    assert data.ids[0] == "test/normal/000.png" and len(data.images) == 11
    assert list(cache.glob("*.part")) == []


def test_wrong_sha256_refused_before_extraction(tmp_path, cache, monkeypatch) -> None:
    folder = make_folder(tmp_path / "images", {"a": 2, "b": 2})
    body = folder_archive(folder, "zip")
    extracted = []
    monkeypatch.setattr(pack, "extract", lambda *a: extracted.append(a))
    with local_server() as server:
        url = server.serve("/data.zip", body)
        with pytest.raises(PipelineError) as info:
            download(data_cfg(url=url, sha256="0" * 64), tmp_path / "raw")
    assert str(info.value).startswith(f"{url}: SHA256 mismatch: expected {'0' * 64}, got "
                                      f"{hashlib.sha256(body).hexdigest()}")
    assert extracted == [] and not (tmp_path / "raw").exists()
    assert not list(tmp_path.glob(".tmp-*")) and not list(cache.glob("*.part"))


@pytest.mark.parametrize(("changes", "expected"), [
    ({"url": "http://x/d.zip"}, "'data.sha256' must be set with 'data.url' for source folder"),
    ({"url": "http://x/d.zip", "sha256": "abc"}, "'data.sha256' must be 64 hex digits"),
    ({"url": "ftp://x/d.zip", "sha256": "0" * 64}, "'data.url' 'ftp://x/d.zip' must be an"),
    ({"sha256": "0" * 64}, "'data.sha256' is read only with 'data.url' for source folder"),
])
def test_archive_params_are_checked(tmp_path, changes, expected) -> None:
    with pytest.raises(PipelineError, match=expected.replace("(", r"\(")):
        download(data_cfg(**changes), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
