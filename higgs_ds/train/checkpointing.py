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
        # rotate only complete tags up to this one: never the new `latest`, never a later stale tag
        older = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir() and p.name <= tag)
        for old in older[:-keep_last]:
            shutil.rmtree(old)
    dist.barrier()
    return tag


def latest_tag(ckpt_dir: Path) -> str | None:
    f = ckpt_dir / "latest"
    return f.read_text().strip() if f.exists() else None


def resolve_resume(ckpt_dir: Path, resume: str | None) -> str | None:
    """The tag to resume from, decided on rank 0 and broadcast so that every rank agrees.
    A fresh run (resume=None) refuses a run directory that already holds checkpoints."""
    decision = [None]
    if dist.get_rank() == 0:
        latest = latest_tag(ckpt_dir)
        if resume is None and latest is not None:
            decision = [FileExistsError(f"{ckpt_dir} already holds checkpoints (latest: {latest}); pass "
                                        f"resume=auto to continue that run, or use a new run_dir")]
        elif resume not in (None, "auto") and not (ckpt_dir / resume).is_dir():
            decision = [FileNotFoundError(f"resume={resume!r}: no such checkpoint in {ckpt_dir}")]
        else:
            decision = [latest if resume == "auto" else resume]
    dist.broadcast_object_list(decision, src=0)
    if isinstance(decision[0], Exception):
        raise decision[0]
    return decision[0]


def load(engine, ckpt_dir: Path, tag: str) -> dict:
    """Restore engine state and this rank's own state; returns the per-rank state dict."""
    rank, world = dist.get_rank(), dist.get_world_size()
    path = ckpt_dir / tag / f"higgs_rank{rank}.pt"
    missing = torch.tensor([0.0 if path.exists() else 1.0])
    dist.all_reduce(missing)  # every rank raises together instead of the others hanging
    if missing.item():
        raise FileNotFoundError(f"{ckpt_dir / tag}: {int(missing.item())} rank(s) have no higgs_rank*.pt: the "
                                f"checkpoint was written by a different world size or is incomplete")
    state = torch.load(path, weights_only=False)
    if state["world_size"] != world:
        raise RuntimeError(f"checkpoint {tag} was written with world size {state['world_size']}, this run has "
                           f"{world}: exact data resumption needs the same number of ranks")
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}")
    set_rng_state(state["rng"])
    return state
