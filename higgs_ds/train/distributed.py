"""Process-group setup for whichever launcher started us.

Rank and world size come from whichever launcher started us: the DeepSpeed launcher / torchrun
(RANK, LOCAL_RANK, WORLD_SIZE) or `srun` one task per device (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch


def export_slurm_env() -> None:
    """Map srun's per-task variables to torch.distributed's env:// variables when those are absent."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_NTASKS", "1")
    os.environ.setdefault("MASTER_PORT", "29500")
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError("srun launch: set MASTER_ADDR to the first node's address (see launch/slurm/)")


def init_distributed(timeout_s: int = 600) -> tuple[int, int]:
    """Start the process group (gloo on CPU, nccl on GPU); returns (rank, world_size).
    The timeout bounds how long a rank waits for a dead peer before it errors out."""
    import deepspeed

    export_slurm_env()
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    deepspeed.init_distributed(timeout=timedelta(seconds=timeout_s))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
