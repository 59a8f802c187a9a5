"""``medpipe export --out`` and ``medpipe predict --out`` that cannot be written: one line,
before the model is exported or the images are scored, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_stage_cli

from medpipe.commands import export as export_command
from medpipe.commands import output, predict
from medpipe.models import architectures, checkpoint


def save_model(path: Path) -> None:
    arch = {"name": "cnn", "in_channels": 1, "num_classes": 2, "image_size": 16,
            "width_mult": 1.0, "dropout": 0.0, "mean": [0.4], "std": [0.2]}
    checkpoint.save_checkpoint(path, architectures.build_model(arch).eval(), arch=arch,
                               classes=["a", "b"], params={}, info={})


@pytest.fixture
def never_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The export and the prediction record a call instead of running."""
    calls: list[str] = []
    for module, name in ((export_command, "export_onnx"), (export_command,
                                                            "export_torchscript"),
                         (predict, "predict_files")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: calls.append(_n))
    return calls


def blocked_outputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Paths that cannot be written even as root, and what the error says of each."""
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    (tmp_path / "taken").mkdir()
    return {"under a file": (tmp_path / "notes.txt" / "model.onnx",
                             f"{tmp_path / 'notes.txt'} is a file, not a folder"),
            "deeper under a file": (tmp_path / "notes.txt" / "a" / "b.csv",
                                    f"{tmp_path / 'notes.txt'} is a file, not a folder"),
            "a folder": (tmp_path / "taken", "is a folder; give the name of a file")}


@pytest.mark.parametrize("case", ["under a file", "deeper under a file", "a folder"])
def test_export_to_an_unwritable_out_is_one_line_before_the_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None,
        never_run: list[str], case: str) -> None:
    save_model(tmp_path / "model.pt")
    out, expected = blocked_outputs(tmp_path)[case]
    code, err = run_stage_cli("export", export_command,
                              ["--model", str(tmp_path / "model.pt"), "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith(f"error: --out {out}: "), err
    assert expected in lines[-1] and "Traceback" not in err
    assert never_run == []


@pytest.mark.parametrize("case", ["under a file", "a folder"])
def test_predict_to_an_unwritable_out_is_one_line_before_the_images_are_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None,
        never_run: list[str], case: str) -> None:
    save_model(tmp_path / "model.pt")
    (tmp_path / "images").mkdir()
    out, expected = blocked_outputs(tmp_path)[case]
    code, err = run_stage_cli("predict", predict, ["--model", str(tmp_path / "model.pt"),
                                                   "--out", str(out),
                                                   str(tmp_path / "images")], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith(f"error: --out {out}: "), err
    assert expected in lines[-1] and never_run == []


def test_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """A folder the process may not write in (as root, only a read-only mount does that;
    here the write itself is made to fail as it would there)."""
    def read_only(**_: object):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(output.tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(output.PipelineError, match=rf"--out {tmp_path}/m.onnx: cannot write "
                                                   rf"in {tmp_path} \(Read-only file system\)"):
        output.check_writable(tmp_path / "m.onnx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(output.PipelineError, match="cannot write in .*Permission denied"):
            output.check_writable(folder / "m.onnx")
    finally:
        folder.chmod(0o755)


def test_a_missing_folder_that_can_be_made_passes_and_nothing_is_left(tmp_path: Path) -> None:
    output.check_writable(tmp_path / "new" / "deeper" / "m.onnx")
    assert list(tmp_path.iterdir()) == []
