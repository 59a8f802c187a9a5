"""One seeding helper for every RNG the pipeline uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed every RNG the pipeline uses (Python, NumPy, torch on CPU and CUDA).

    ``deterministic`` selects deterministic kernels (cuDNN, cuBLAS, scatter ops): the
    same params then give the same model. Off, cuDNN may benchmark and pick faster,
    non-deterministic kernels on a GPU. CPU training here is deterministic either way.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
