"""Checkpoints: DeepSpeed's sharded engine state plus our own per-rank state, saved atomically.

Layout of `<run_dir>/checkpoints/`:
  step000100/                      DeepSpeed tag dir (zero_pp_rank_*_model_states.pt, optim states)
  step000100/higgs_rank{r}.pt      per-rank: data-loader state, RNG states, step, world size
  step000100/config.json           the training config of the run
  latest                           the tag of the newest *complete* checkpoint

`latest` is replaced (os.replace) only after every rank has finished writing, so a crash during
a save leaves the previous checkpoint as `latest`. Older tags beyond `keep_last` are deleted.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(engine, ckpt_dir: Path, step: int, rank_state: dict, config: dict, keep_last: int) -> str:
    tag = f"step{step:06d}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.save({**rank_state, "step": step, "world_size": world, "rng": rng_state()},
               ckpt_dir / tag / f"higgs_rank{rank}.pt")
    if rank == 0:
        (ckpt_dir / tag / "config.json").write_text(json.dumps(config, indent=2))
    dist.barrier()  # every rank's files exist before `latest` moves
    if rank == 0:
        tmp = ckpt_dir / "latest.tmp"
        tmp.write_text(tag)
        os.replace(tmp, ckpt_dir / "latest")
        for old in sorted(p for p in ckpt_dir.glob("step*") if p.is_dir())[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return tag


def latest_tag(ckpt_dir: Path) -> str | None:
    f = ckpt_dir / "latest"
    return f.read_text().strip() if f.exists() else None


def load(engine, ckpt_dir: Path, tag: str) -> dict:
    """Restore engine state and this rank's own state; returns the per-rank state dict."""
    rank, world = dist.get_rank(), dist.get_world_size()
    path = ckpt_dir / tag / f"higgs_rank{rank}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: checkpoint {tag} was written by a different world size "
                                f"or is incomplete")
    state = torch.load(path, weights_only=False)
    if state["world_size"] != world:
        raise RuntimeError(f"checkpoint {tag} was written with world size {state['world_size']}, this run has "
                           f"{world}: exact data resumption needs the same number of ranks")
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}")
    set_rng_state(state["rng"])
    return state
