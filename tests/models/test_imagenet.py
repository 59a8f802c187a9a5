"""ImageNet weights as a pipeline input: the pretrained stage's sources (torch hub cache,
URL or mirror), hash checks, offline errors, and the train stage reading its output."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from pathlib import Path

import pytest
import torch
from localhttp import local_server
from torchfiles import Payload, check_refusal, unloadable_files

from medpipe import PipelineError
from medpipe.models import imagenet
from medpipe.models.imagenet import WeightsFile


def state_bytes(seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes]:
    torch.manual_seed(seed)
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.randn(2)}
    buf = io.BytesIO()
    torch.save(state, buf)
    return state, buf.getvalue()


def named_for(body: bytes, base: str = "http://127.0.0.1:9/models") -> WeightsFile:
    """A weights file whose name carries the SHA-256 prefix of ``body``, torch.hub style."""
    prefix = hashlib.sha256(body).hexdigest()[:8]
    return WeightsFile(f"{base}/tiny-{prefix}.pth")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME, no mirror, and every proxy pointing at a closed local port."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(imagenet.MIRROR_ENV, raising=False)
    monkeypatch.setenv("MEDPIPE_DOWNLOAD_CACHE", str(tmp_path / "partial"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case set_dir() was called
    # urlopen caches its opener, proxies included: a fresh one now, the old one after.
    monkeypatch.setattr(urllib.request, "_opener", None)
    return home / "hub" / "checkpoints"


def test_every_torchvision_model_has_a_hash_named_weights_file() -> None:
    from medpipe.models.architectures import TORCHVISION

    for name in TORCHVISION:
        wf = imagenet.weights_file(name)
        assert wf.url.startswith("https://download.pytorch.org/models/"), name
        assert wf.sha256_prefix and len(wf.sha256_prefix) >= 8, wf.filename
    assert imagenet.weights_file("resnet18").filename == "resnet18-f37072fd.pth"
    with pytest.raises(PipelineError, match="not available for model 'cnn'"):
        imagenet.weights_file("cnn")


def test_not_pretrained_writes_only_the_record(tmp_path: Path) -> None:
    out = tmp_path / "pretrained"
    assert imagenet.fetch(None, out) == {"pretrained": False}
    assert [p.name for p in out.iterdir()] == [imagenet.INFO]
    assert imagenet.load(out) is None


def test_weights_from_the_hub_cache_are_copied_and_load(offline: Path, tmp_path: Path) -> None:
    state, body = state_bytes()
    wf = named_for(body)
    offline.mkdir(parents=True)
    (offline / wf.filename).write_bytes(body)
    out = tmp_path / "pretrained"
    info = imagenet.fetch(wf, out)
    assert (out / wf.filename).read_bytes() == body
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert json.loads((out / imagenet.INFO).read_text())["file"] == wf.filename
    loaded = imagenet.load(out)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_offline_error_names_the_file_the_url_and_what_to_run(offline: Path,
                                                             tmp_path: Path) -> None:
    """A cached copy whose hash does not match its name is not trusted; offline, the error
    says which file to provide, where, and the alternatives; nothing is written."""
    _, body = state_bytes()
    wf = named_for(body)
    offline.mkdir(parents=True)
    (offline / wf.filename).write_bytes(body[:-10])  # truncated copy
    out = tmp_path / "pretrained"
    with pytest.raises(PipelineError) as info:
        imagenet.fetch(wf, out)
    message = str(info.value)
    assert "\n" not in message
    for part in (wf.url, wf.filename, str(offline), "dvc pull models/pretrained",
                 imagenet.MIRROR_ENV, "pretrained: false"):
        assert part in message, part
    assert not out.exists()


def test_download_from_a_mirror_is_verified_against_the_name(
        offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, body = state_bytes()
    wf = named_for(body)  # its own URL is unreachable
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with local_server() as server:
        server.serve(f"/mirror/{wf.filename}", body)
        monkeypatch.setenv(imagenet.MIRROR_ENV, server.url("/mirror/"))
        out = tmp_path / "pretrained"
        imagenet.fetch(wf, out)
        assert (out / wf.filename).read_bytes() == body
        assert [r.path for r in server.requests] == [f"/mirror/{wf.filename}"]

        # A mirror serving other bytes under that name: refused, nothing written.
        _, other = state_bytes(seed=1)
        server.serve(f"/mirror/{wf.filename}", other)
        out2 = tmp_path / "pretrained2"
        with pytest.raises(PipelineError, match="SHA256 mismatch"):
            imagenet.fetch(wf, out2)
        assert not out2.exists()


def test_weights_file_with_pickled_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    out = tmp_path / "pretrained"
    out.mkdir()
    torch.save({"conv.weight": Payload(marker)}, out / "evil.pth")
    (out / imagenet.INFO).write_text(json.dumps({"pretrained": True, "file": "evil.pth"}))
    with pytest.raises(PipelineError, match="refused: not a torchvision weights file"):
        imagenet.load(out)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "pickled code",
                                  "pickled code, legacy format"])
def test_unloadable_weights_file_is_refused_in_one_line_without_unsafe_advice(
        tmp_path: Path, kind: str) -> None:
    path, reason = unloadable_files(tmp_path)[kind]
    (tmp_path / imagenet.INFO).write_text(json.dumps({"pretrained": True, "file": path.name}))
    with pytest.raises(PipelineError) as caught:
        imagenet.load(tmp_path)
    check_refusal(str(caught.value), path, reason)


def test_missing_weights_directory_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="dvc repro pretrained"):
        imagenet.load(tmp_path / "nowhere")


def test_train_refuses_pretrained_without_weights(tmp_path: Path) -> None:
    """train.pretrained: true with a weights directory that holds none (a stale output)."""
    out = tmp_path / "pretrained"
    imagenet.fetch(None, out)
    with pytest.raises(PipelineError, match="holds no ImageNet weights"):
        imagenet.for_training(True, out)
    assert imagenet.for_training(False, out) is None
