"""Process-group setup for whichever launcher started us.

Rank and world size come from whichever launcher started us: the DeepSpeed launcher / torchrun
(RANK, LOCAL_RANK, WORLD_SIZE) or `srun` one task per device (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import torch

from higgs_ds import comm


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
    if torch.cuda.is_available():  # before NCCL starts: its communicator and object collectives use this GPU
        torch.cuda.set_device(local_device(int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()))
    elif os.environ["WORLD_SIZE"] == "1":
        # A lone CPU process shares memory with nobody: DeepSpeed would still JIT-compile its shared-memory
        # allreduce op (~30 s on a fresh install). DeepSpeed keeps its op table as one
        # dict per process, read when the backend starts.
        deepspeed.ops.__compatible_ops__[SHM_OP] = False
    deepspeed.init_distributed(timeout=timedelta(seconds=timeout_s))
    if not torch.cuda.is_available():
        unlink_shm_allreduce_buffer()
    import_muon_compiling_on_first_call()
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def local_device(local_rank: int, visible: int) -> int:
    """This rank's CUDA device index. The DeepSpeed launcher and `srun --gpus-per-node` show every rank
    all of the node's GPUs (index = LOCAL_RANK); a Slurm that binds one GPU per task (`--gpus-per-task=1`,
    `--gpu-bind`) shows each rank only its own (index 0)."""
    if visible == 1:
        return 0
    if not 0 <= local_rank < visible:
        raise RuntimeError(f"LOCAL_RANK={local_rank} but this process sees {visible} GPUs "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): "
                           f"start one rank per GPU of the node")
    return local_rank


def local_world_size() -> int:
    """Ranks on this node, as the launcher says (torchrun: LOCAL_WORLD_SIZE, the DeepSpeed launcher:
    LOCAL_SIZE, srun: SLURM_NTASKS_PER_NODE), else the visible GPUs (one rank each), else 1."""
    for var in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        if count := re.match(r"\d+", os.environ.get(var, "")):
            return int(count.group())
    return max(torch.cuda.device_count(), 1)


# `deepspeed.initialize` imports DeepSpeed's Muon optimizer to check ours against the ZeRO list, and that
# module applies `torch.compile` at import, which loads Inductor: about 2 s per rank, every run.
MUON_MODULE = "deepspeed.runtime.zero.muon.muon_optimizer"


def import_muon_compiling_on_first_call() -> None:
    """Import DeepSpeed's Muon module with `torch.compile` deferred to each function's first call, so a
    run that never uses Muon never loads Inductor and one that does still gets the compiled functions."""
    if MUON_MODULE in sys.modules:
        return
    compile_now = torch.compile

    def compile_on_first_call(model=None, **options):
        if model is None:  # used as `@torch.compile(**options)`
            return lambda function: compile_on_first_call(function, **options)
        compiled = None

        @functools.wraps(model)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = compile_now(model, **options)
            return compiled(*args, **kwargs)

        return call

    torch.compile = compile_on_first_call
    try:
        importlib.import_module(MUON_MODULE)
    except ImportError:  # a DeepSpeed without Muon: nothing to defer
        pass
    finally:
        torch.compile = compile_now


SHM_DIR = Path("/dev/shm")
SHM_OP = "deepspeed_shm_comm"  # the NAME of DeepSpeed's CPU ShareMemCommBuilder


def shm_allreduce_buffer() -> Path:
    """The shared-memory segment DeepSpeed's CPU allreduce creates for this rank (single-node runs)."""
    env = os.environ
    return SHM_DIR / (f"deepspeed_allreduce_buffer_{os.getuid()}_{env.get('MASTER_ADDR', '')}_"
                      f"{env.get('MASTER_PORT', '')}_{env['RANK']}")


def unlink_shm_allreduce_buffer() -> None:
    """DeepSpeed's CPU backend never unlinks its ~70 MB allreduce segment per rank, so every run (and
    every killed one) leaves them in /dev/shm, i.e. in RAM, until the machine runs out of memory.
    Every rank has mapped its peers' segments once init returns; after a barrier the names can go
    and the memory is freed when the last rank exits, however it exits."""
    comm.barrier()  # on every rank, whether or not it has a segment: a one-sided barrier would hang
    shm_allreduce_buffer().unlink(missing_ok=True)


def exit_process(code: int) -> None:
    """End a rank at once, with `code`, once its work is done. The interpreter's own teardown of torch,
    DeepSpeed and the process groups adds seconds to every rank (2.2 s on a CPU rank) and, after NCCL, can
    hang; nothing in it is ours. The atexit handlers still run (logging, W&B, data workers), and output is
    flushed first."""
    import atexit

    atexit._run_exitfuncs()  # noqa: SLF001  (what interpreter shutdown would run first)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
