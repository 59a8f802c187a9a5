"""bench/gpu.sh runs here as a dry run: plan, train, determinism, resume, throughput on
the CPU at tiny sizes, so the script that the GPU machine runs is known to work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path: Path) -> None:
    # The script gets the environment of the GPU machine (no venv variables); its bytecode
    # goes to a scratch folder, never into the checkout.
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                               "PYTHON": sys.executable,
                               "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "determinism: two runs give the same weights: True" in out
    assert "the same weights: True" in out.split("resume:")[1]
    assert "ours/seed" in out  # the throughput table
