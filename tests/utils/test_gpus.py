"""GPU pinning (medpipe/gpus.py) with real concurrent processes: no GPU is needed, since
what is tested is who gets which lock and what CUDA_VISIBLE_DEVICES each process sees."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from medpipe import PipelineError
from medpipe.utils import gpus

# A process that pins itself like a stage does, prints what it sees, then holds its GPUs
# until the file named by its second argument appears (or until it is killed).
HOLDER = """
import logging, os, sys, time
from pathlib import Path
from medpipe.utils import gpus
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
gpus.pin("auto", count=int(sys.argv[1]))
print(os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
"""


class Holder:
    def __init__(self, tmp: Path, name: str, gpu_list: str, count: int = 1):
        self.release_file = tmp / f"release-{name}"
        env = {**os.environ, gpus.ENV_GPUS: gpu_list, gpus.ENV_LOCK_DIR: str(tmp / "locks"),
               "PYTHONPATH": str(ROOT)}
        env.pop("LOCAL_RANK", None)
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(count),
                                      str(self.release_file)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def gpus(self, timeout: float) -> str | None:
        """The CUDA_VISIBLE_DEVICES it printed, or None if it printed nothing in time."""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
        line = self.proc.stdout.readline().strip()
        assert line, f"holder exited {self.proc.wait()}: {self.proc.stderr.read()}"
        return line

    def release(self) -> None:
        self.release_file.touch()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        self.proc.wait()


@pytest.fixture
def holders(tmp_path: Path):
    started: list[Holder] = []

    def start(name: str, gpu_list: str, count: int = 1) -> Holder:
        started.append(Holder(tmp_path, name, gpu_list, count))
        return started[-1]

    yield start
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def test_concurrent_processes_get_distinct_gpus_and_wait_when_all_are_taken(holders) -> None:
    a, b = holders("a", "0,1"), holders("b", "0,1")
    a_gpu, b_gpu = a.gpus(30), b.gpus(30)
    assert {a_gpu, b_gpu} == {"0", "1"}
    c = holders("c", "0,1")
    assert c.gpus(2.0) is None  # both taken: it waits
    assert c.proc.poll() is None
    a.kill()  # a crash releases the lock: the kernel drops it with the process
    assert c.gpus(30) == a_gpu
    b.release()  # a normal exit releases it too
    d = holders("d", "0,1")
    assert d.gpus(30) == b_gpu
    c.release()
    d.release()


def test_several_gpus_for_one_process(holders) -> None:
    """train.nproc > 1 pins that many GPUs at once; torchrun's ranks inherit them."""
    a = holders("a", "0,1,2", count=2)
    seen = a.gpus(30)
    assert seen is not None and len(set(seen.split(","))) == 2
    b = holders("b", "0,1,2", count=2)
    assert b.gpus(2.0) is None  # one GPU left, two needed
    c = holders("c", "0,1,2", count=1)
    assert c.gpus(30) == ({"0", "1", "2"} - set(seen.split(","))).pop()
    a.release()
    assert b.gpus(30) is not None
    b.release()
    c.release()


def test_lock_files_live_in_the_shared_directory(holders, tmp_path: Path) -> None:
    a = holders("a", "3")
    assert a.gpus(30) == "3"
    assert (tmp_path / "locks" / "gpu-3.lock").exists()
    a.release()


# The platform without fcntl (Windows): importing and locking must not need it.
NO_FCNTL = """
import sys
sys.modules["fcntl"] = None  # import fcntl now raises ImportError
from medpipe.utils import gpus
print(gpus.acquire(["0", "1"], 2, poll=0.01))
"""


def test_gpu_pinning_needs_no_fcntl(tmp_path: Path) -> None:
    env = {**os.environ, gpus.ENV_LOCK_DIR: str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", NO_FCNTL], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['0', '1']"


@pytest.mark.parametrize("value", ["", "a,b", "0,0", "0;1", "0,,1"])
def test_bad_gpu_list_is_one_clear_error(value: str) -> None:
    with pytest.raises(PipelineError, match="MEDPIPE_GPUS=.*expected distinct GPU indices"):
        gpus.parse_gpus(value)


def test_parse_accepts_indices_and_uuids() -> None:
    assert gpus.parse_gpus("0, 1,2") == ["0", "1", "2"]
    assert gpus.parse_gpus("GPU-8e6b1a2c-aaaa-bbbb") == ["GPU-8e6b1a2c-aaaa-bbbb"]


def test_more_gpus_than_listed_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(gpus.ENV_LOCK_DIR, str(tmp_path))
    with pytest.raises(PipelineError, match="4 GPUs needed but MEDPIPE_GPUS lists only 2"):
        gpus.acquire(["0", "1"], 4)


def test_pin_does_nothing_without_the_variable_on_cpu_or_under_torchrun(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(gpus.ENV_LOCK_DIR, str(tmp_path))
    monkeypatch.delenv(gpus.ENV_GPUS, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus.pin("auto") is None
    monkeypatch.setenv(gpus.ENV_GPUS, "0,1")
    assert gpus.pin("cpu") is None
    assert gpus.pin("cuda:1") is None  # an explicit device wins
    monkeypatch.setenv("LOCAL_RANK", "1")  # a torchrun rank: its launcher pinned
    assert gpus.pin("auto") is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not list(tmp_path.iterdir())  # no lock taken


def test_waiting_is_logged_once(holders) -> None:
    a = holders("a", "5")
    assert a.gpus(30) == "5"
    b = holders("b", "5")
    time.sleep(1.5)
    a.release()
    assert b.gpus(30) == "5"
    b.release()
    err = b.proc.stderr.read()
    assert err.count("all GPUs of MEDPIPE_GPUS=5 are taken; waiting for 1 to be free") == 1
    assert "pinned to GPU 5 (MEDPIPE_GPUS=5)" in err
