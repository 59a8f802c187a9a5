"""The `medpipe` command: installed as a script, every subcommand answers --help, and a
mistyped command or a bad argument is a short error with a non-zero exit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medpipe.commands import COMMANDS, main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medpipe", *args], capture_output=True,
                          text=True, timeout=600)


def test_the_script_is_installed() -> None:
    script = Path(sys.executable).parent / "medpipe"
    assert script.is_file() or shutil.which("medpipe"), "pyproject [project.scripts]"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "predict" in out.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help(name: str) -> None:
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: medpipe {name}")


def test_unknown_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pridict"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "unknown command 'pridict'" in err and all(name in err for name in COMMANDS)


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "commands:" in capsys.readouterr().out


def test_a_command_error_is_one_line(tmp_path: Path) -> None:
    out = run("predict", "--model", str(tmp_path / "none.pt"), "--out",
              str(tmp_path / "p.csv"), str(tmp_path))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in out.stderr and not (tmp_path / "p.csv").exists()
