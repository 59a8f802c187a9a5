"""Data-parallel training with PyTorch's own engine: DistributedDataParallel + torchrun.

The train stage relaunches itself under ``torchrun`` when ``train.nproc`` > 1 (one node);
for several nodes, start ``torchrun --nnodes ... -m stages.train`` on each node yourself.
Every rank runs the same code; :class:`DistInfo` tells it which share of each batch is
its own and whether it is rank 0, the only one that logs and writes files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medpipe import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(nproc: int, module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` as ``nproc`` processes under torchrun; return its exit
    status. Each rank gets an equal share of this machine's CPU threads."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", module, *argv]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.call(cmd, env=env)


def init(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); one GPU a rank."""
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise PipelineError(f"rank {info.rank} needs GPU {info.local_rank}, but only "
                                f"{torch.cuda.device_count()} are visible")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (a no-op without a process group)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not info.active:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()
