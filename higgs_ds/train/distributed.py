"""Process-group setup and the DeepSpeed config, both derived from the training config.

Rank and world size come from whichever launcher started us: the DeepSpeed launcher / torchrun
(RANK, LOCAL_RANK, WORLD_SIZE) or `srun` one task per device (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS).
"""

from __future__ import annotations

import copy
import json
import os
from datetime import timedelta
from pathlib import Path

import torch

from higgs_ds.train.config import TrainConfig


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


def resolve_precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if torch.cuda.is_available() else "fp32"


def build_ds_config(path: str | Path, cfg: TrainConfig, world_size: int) -> dict:
    """Load a DeepSpeed JSON and fill its "auto" fields from the training config (one source of truth)."""
    ds = copy.deepcopy(json.loads(Path(path).read_text()))
    micro = cfg.data.train.stream.max_batch_size  # nominal: batches are built to a token budget
    filled = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") not in ("auto", value):
            raise ValueError(f"{path}: {key}={ds[key]} conflicts with the training config ({value}); "
                             f"set it to \"auto\" and change the recipe instead")
        ds[key] = value
    ds["train_batch_size"] = micro * cfg.grad_accum * world_size
    ds.setdefault("bf16", {})["enabled"] = resolve_precision(cfg) == "bf16"
    return ds
