"""TorchScript and ONNX export: same outputs as the PyTorch model, metadata, refusals."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_stage_cli

from medpipe import PipelineError
from medpipe.commands import export as export_command
from medpipe.inference import export
from medpipe.models import architectures, checkpoint

# Loading TorchScript warns that it is deprecated (recent torch); the export hides it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit.*:FutureWarning")


def save_model(path: Path, name: str, channels: int, size: int, task: str = "multiclass"
               ) -> architectures.Classifier:
    arch = {"name": name, "in_channels": channels, "num_classes": 3, "image_size": size,
            "width_mult": 0.5, "dropout": 0.3, "mean": [0.4] * channels,
            "std": [0.2] * channels}
    torch.manual_seed(0)
    model = architectures.build_model(arch).eval()
    checkpoint.save_checkpoint(path, model, arch=arch, classes=["a", "b", "c"], params={},
                           info={}, task=task)
    return model


@pytest.mark.parametrize(("name", "channels", "size"), [("cnn", 1, 24), ("mobilenet_v2", 3, 32)])
def test_torchscript_gives_the_pytorch_outputs(tmp_path: Path, name: str, channels: int,
                                               size: int) -> None:
    model = save_model(tmp_path / "model.pt", name, channels, size)
    meta = export.export_torchscript(tmp_path / "model.pt", tmp_path / "model.ts")
    extra = {export.METADATA: ""}
    loaded = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu", _extra_files=extra)
    assert json.loads(extra[export.METADATA]) == meta
    assert meta["classes"] == ["a", "b", "c"] and meta["preprocess"]["image_size"] == size
    x = torch.rand(7, channels, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert got.shape == (7, 3)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0.0)
    assert not (expected == expected[0]).all()  # the check compares varying outputs
    with torch.no_grad():
        assert torch.equal(loaded(x), got)  # eval mode: dropout is off, outputs repeat
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(("name", "channels", "size", "task"),
                         [("cnn", 1, 24, "multiclass"), ("resnet18", 3, 32, "multilabel")])
def test_onnx_gives_the_pytorch_outputs_at_any_batch_size(tmp_path: Path, name: str,
                                                          channels: int, size: int,
                                                          task: str) -> None:
    import onnxruntime

    model = save_model(tmp_path / "model.pt", name, channels, size, task)
    meta = export.export_onnx(tmp_path / "model.pt", tmp_path / "model.onnx")
    assert meta["task"] == task and meta["arch"] == name
    assert ("sigmoid" in meta["output"]) == (task == "multilabel")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    stored = session.get_modelmeta().custom_metadata_map[export.METADATA]
    assert json.loads(stored) == meta
    gen = torch.Generator().manual_seed(5)
    for batch in (1, 7):  # exported with a batch of 2: the batch axis is dynamic
        x = torch.rand(batch, channels, size, size, generator=gen)
        got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
        with torch.no_grad():
            expected = model(x)
        assert got.shape == (batch, 3)
        assert torch.allclose(got, expected, atol=export.ONNX_ATOL, rtol=0.0)
    assert not (expected == expected[0]).all()  # the check compares varying outputs
    assert not list(tmp_path.glob(".tmp-*"))


def test_export_refuses_a_model_it_cannot_reproduce(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before writing can fail: an ONNX Runtime answering off by 1e-3 is refused."""
    import onnxruntime

    save_model(tmp_path / "model.pt", "cnn", 1, 16)
    real = onnxruntime.InferenceSession.run

    def off(self, names, feed):  # noqa: ANN001 - ONNX Runtime's own signature
        return [out + 1e-3 for out in real(self, names, feed)]

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", off)
    with pytest.raises(PipelineError, match=r"the ONNX model differs .* not exported"):
        export.export_onnx(tmp_path / "model.pt", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return run_stage_cli("export", export_command, argv, capsys)


def test_cli_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                     caplog: pytest.LogCaptureFixture, restore_logging: None) -> None:
    caplog.set_level("INFO")
    save_model(tmp_path / "model.pt", "cnn", 1, 16)
    code, err = run_cli(["--model", str(tmp_path / "model.pt"), "--out",
                         str(tmp_path / "m.ts")], capsys)
    assert code == 0 and (tmp_path / "m.ts").is_file(), err
    assert "(TorchScript; classes a, b, c, input 1x16x16)" in caplog.text
    code, err = run_cli(["--model", str(tmp_path / "model.pt"), "--out",
                         str(tmp_path / "m.onnx")], capsys)  # the suffix picks ONNX
    assert code == 0 and "m.onnx (ONNX; classes a, b, c" in caplog.text, err
    import onnx

    onnx.checker.check_model(str(tmp_path / "m.onnx"))


class Payload:
    """Unpickling this runs ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.marker,)


def test_model_file_with_pickled_code_is_refused_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "state_dict": Payload(marker)}, evil)
    with pytest.raises(PipelineError, match="refused: not a model file this pipeline wrote"):
        export.export_torchscript(evil, tmp_path / "m.ts")
    code, err = run_cli(["--model", str(evil), "--out", str(tmp_path / "m.ts")], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith(f"error: {evil}: refused: not a model file this "
                                         "pipeline wrote (it holds pickled objects"), err
    assert "weights_only" not in err and "will likely succeed" not in err
    assert not marker.exists() and not (tmp_path / "m.ts").exists()


def test_truncated_model_file_is_a_one_line_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    whole, cut = tmp_path / "whole.pt", tmp_path / "cut.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "weight": torch.zeros(4096)}, whole)
    cut.write_bytes(whole.read_bytes()[:3000])  # a download or copy cut short
    code, err = run_cli(["--model", str(cut), "--out", str(tmp_path / "m.ts")], capsys)
    assert code == 1 and err.strip().splitlines()[-1] == (
        f"error: {cut}: refused: not a PyTorch file, or a corrupt or truncated one"), err
    assert "Traceback" not in err and not (tmp_path / "m.ts").exists()


def test_missing_model_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           restore_logging: None) -> None:
    code, err = run_cli(["--model", str(tmp_path / "none.pt"), "--out",
                         str(tmp_path / "m.ts")], capsys)
    assert code == 1 and "none.pt: model file not found" in err.strip().splitlines()[-1]
