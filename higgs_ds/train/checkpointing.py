"""Checkpoints: DeepSpeed's sharded engine state plus our own per-rank state, saved crash-safely.

Layout of `<run_dir>/checkpoints/`:
  step000100/                      DeepSpeed tag dir (zero_pp_rank_*_model_states.pt, optim states)
  step000100/higgs_rank{r}.pt      per-rank: data-loader state, RNG states, step, world size
  step000100/config.json           the training config of the run
  step000100/complete.json         written last, once every rank's files exist: names and sizes
  latest                           the tag of the newest complete checkpoint

A tag is complete only when `complete.json` exists and every file it lists has its recorded size, so
a save killed at any point (or a file cut short later) is never taken for a checkpoint. `latest` is
replaced (os.replace) after the marker; older complete tags beyond `keep_last`, and interrupted tags
older than the new one, are renamed away atomically and then deleted, so a crash during rotation
leaves no half-deleted tag behind. Every file is loaded with `torch.load(weights_only=True)`,
DeepSpeed's own files included: a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from higgs_ds import comm
from higgs_ds.errors import CheckpointError, UserError
from higgs_ds.run_dir import (  # noqa: F401 (re-exported)
    COMPLETE,
    complete_tags,
    damaged_file,
    is_complete,
    latest_tag,
    safe_load,
    tag_listing,
)

log = logging.getLogger(__name__)
TRASH = ".deleting-"
# Test-only fault injection: "<point>:<step>:<rank>[:kill|torn|enospc|slow]" makes that rank SIGKILL itself
# (torn: after cutting its newest file in half), fail with ENOSPC, or take SLOW_SAVE_S longer (a slow disk)
# at that point of that step's save.
FAULT_ENV = "HIGGS_DS_CHECKPOINT_FAULT"
SLOW_SAVE_S = 5.0


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written; the previous complete checkpoint is untouched. Exit status 1:
    the input was fine, the disk was not. Every rank writes to the same run folder, so rank 0 says it."""

    exit_code = 1
    every_rank = True

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno 28] ..." prefix
        return self.strerror or super().__str__()


def _fault(point: str, step: int, tag_dir: Path) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, at_step, rank, *action = spec.split(":")
    if (where, int(at_step), int(rank)) != (point, step, comm.rank()):
        return
    action = action[0] if action else "kill"
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tag_dir))
    if action == "slow":
        time.sleep(SLOW_SAVE_S)
        return
    if action == "torn":  # as if killed while writing this rank's newest file
        mine = [p for p in tag_dir.iterdir() if f"rank{rank}." in p.name or f"rank_{rank}_" in p.name]
        newest = max(mine, key=lambda p: p.stat().st_mtime_ns)
        os.truncate(newest, newest.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def rng_state() -> dict:
    """RNG states as plain containers and tensors only (loadable with weights_only=True)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {**np_state["state"], "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64))}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({**np_state, "state": {**np_state["state"],
                                               "key": np_state["state"]["key"].numpy().astype(np.uint32)}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _discard(tag_dir: Path) -> None:
    """Rename first (atomic), then delete: a crash mid-delete leaves only a `.deleting-*` folder."""
    trash = tag_dir.with_name(TRASH + tag_dir.name)
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(tag_dir, trash)
    shutil.rmtree(trash)


def _rotate(ckpt_dir: Path, tag: str, keep_last: int, step: int) -> None:
    """Keep the newest `keep_last` complete tags up to `tag` (never later ones: they belong to an
    abandoned future of an explicit resume); drop interrupted tags older than `tag`."""
    for leftover in ckpt_dir.glob(TRASH + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    older = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir() and p.name <= tag)
    complete = [p for p in older if is_complete(p)]
    for old in complete[:-keep_last] + [p for p in older if p not in complete]:
        _discard(old)
        _fault("rotating", step, ckpt_dir / tag)


# torch's zip writer reports a short write (a full disk, mostly) as a RuntimeError without an errno.
SHORT_WRITE = ("unexpected pos", "failed writing")


def _failure_cause(exc: BaseException, free: int) -> str | None:
    """'no space ...' when the save ran out of disk (or quota); None for any other failure."""
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if free < 2**20 or any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain):
        return f"no space left on device ({free / 2**20:.1f} MiB free)"
    if any(isinstance(e, RuntimeError) and any(s in str(e) for s in SHORT_WRITE) for e in chain):
        return f"a write came up short: most likely no space left on device ({free / 2**20:.1f} MiB free now)"
    return None


def _write_error(exc: Exception, ckpt_dir: Path, tag: str, free: int) -> CheckpointWriteError:
    """`free` is measured at the failure, before anything is cleaned up (by this rank or another)."""
    cause = _failure_cause(exc, free)
    previous = latest_tag(ckpt_dir)
    keeps = f"{previous} is still the latest complete checkpoint" if previous else "there is no earlier checkpoint"
    return CheckpointWriteError(errno.ENOSPC if cause else errno.EIO,
                                f"writing checkpoint {ckpt_dir / tag} failed: {cause or f'{type(exc).__name__}: {exc}'}"
                                f"; {keeps} (resume=auto continues from it)".replace("\n", " "))


def _agree(failure: BaseException | None, ckpt_dir: Path, tag: str) -> None:
    """Every rank learns whether any rank failed to write its files (one all-reduce, in place of a barrier):
    then all raise together and rank 0 names the failed ranks and the cause, its own or theirs, rather than
    one rank's line and a lost connection on the others."""
    rank, world = comm.rank(), comm.world_size()
    codes = torch.zeros(world, dtype=torch.float64)
    if failure is not None:
        codes[rank] = getattr(failure, "errno", None) or -1
    codes = comm.all_reduce(codes)
    failed = codes.nonzero().flatten().tolist()
    if not failed:
        return
    tag_dir = ckpt_dir / tag
    free = shutil.disk_usage(ckpt_dir).free
    comm.barrier()  # every rank has measured the free space before any gives it back
    if not is_complete(tag_dir):
        shutil.rmtree(tag_dir, ignore_errors=True)  # give the space back; `latest` never named it
    if failure is not None and rank == failed[0]:
        raise _write_error(failure, ckpt_dir, tag, free) from failure
    first = int(codes[failed[0]])
    cause = os.strerror(first).lower() if first > 0 else "see that rank's log"
    previous = latest_tag(ckpt_dir)
    keeps = f"{previous} is still the latest complete checkpoint" if previous else "there is no earlier checkpoint"
    raise CheckpointWriteError(first if first > 0 else errno.EIO,
                               f"writing checkpoint {tag_dir} failed on rank{'s' if len(failed) > 1 else ''} "
                               f"{', '.join(map(str, failed))}: {cause}; {keeps} (resume=auto continues from it)")


def save(engine, ckpt_dir: Path, step: int, rank_state: dict, config: dict, keep_last: int) -> str:
    tag = f"step{step:06d}"
    tag_dir = ckpt_dir / tag
    rank, world = comm.rank(), comm.world_size()
    if rank == 0 and tag_dir.exists():  # leftovers of an interrupted save (or an abandoned future)
        if latest_tag(ckpt_dir) == tag:
            _write_latest(ckpt_dir, max((t for t in complete_tags(ckpt_dir) if t < tag), default=None))
        _discard(tag_dir)
    comm.barrier()
    failure = None
    try:
        engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
        _fault("engine_saved", step, tag_dir)
        torch.save({**rank_state, "step": step, "world_size": world, "rng": rng_state()},
                   tag_dir / f"higgs_rank{rank}.pt")
        _fault("rank_state_saved", step, tag_dir)
        if rank == 0:
            (tag_dir / "config.json").write_text(json.dumps(config, indent=2))
    except (OSError, RuntimeError) as exc:
        failure = exc
    _agree(failure, ckpt_dir, tag)  # every rank's files exist before the tag is marked complete
    if rank == 0:
        try:
            files = {p.name: p.stat().st_size for p in sorted(tag_dir.iterdir()) if p.is_file()}
            tmp = tag_dir / (COMPLETE + ".tmp")
            tmp.write_text(json.dumps({"tag": tag, "step": step, "world_size": world, "files": files}, indent=1))
            os.replace(tmp, tag_dir / COMPLETE)
            _fault("marked", step, tag_dir)
            _write_latest(ckpt_dir, tag)
            _fault("latest_moved", step, tag_dir)
            _rotate(ckpt_dir, tag, keep_last, step)
        except (OSError, RuntimeError) as exc:
            free = shutil.disk_usage(ckpt_dir).free
            if not is_complete(tag_dir):
                shutil.rmtree(tag_dir, ignore_errors=True)
            raise _write_error(exc, ckpt_dir, tag, free) from exc
    comm.barrier()
    return tag


def _write_latest(ckpt_dir: Path, tag: str | None) -> None:
    if tag is None:
        (ckpt_dir / "latest").unlink(missing_ok=True)
        return
    tmp = ckpt_dir / "latest.tmp"
    tmp.write_text(tag)
    os.replace(tmp, ckpt_dir / "latest")


def _auto_tag(ckpt_dir: Path, warn: bool = True) -> str | None:
    """`latest`, or the newest complete tag whose files all load when `latest` is missing, unreadable,
    names an incomplete tag or one with a damaged file (one warning names what was skipped)."""
    latest = latest_tag(ckpt_dir)
    skipped = []
    candidates = [latest] * (latest is not None) + sorted(complete_tags(ckpt_dir), reverse=True)
    for tag in dict.fromkeys(candidates):  # `latest` first, then newest first, each once
        if not is_complete(ckpt_dir / tag):
            skipped.append(f"latest={tag} is not a complete checkpoint")
            continue
        damage = damaged_file(ckpt_dir / tag)
        if damage is None:
            if skipped and warn:
                log.warning("%s: %s; using %s", ckpt_dir, "; ".join(skipped), tag)
            return tag
        skipped.append(f"{tag}/{damage}")
    if skipped and warn:
        log.warning("%s: %s; no complete checkpoint left, starting fresh", ckpt_dir, "; ".join(skipped))
    return None


def choose_resume_tag(ckpt_dir: Path, resume: str | None, warn: bool = True) -> str | None:
    """The tag to resume from (None: a fresh start), or a CheckpointError saying why `resume` cannot be
    honoured. Reads only the file system, so it also runs before any process group exists."""
    latest = latest_tag(ckpt_dir) or max(complete_tags(ckpt_dir), default=None)
    if resume is None:
        if latest is not None:
            raise CheckpointError(f"{ckpt_dir} already holds checkpoints (latest: {latest})", where="resume",
                                  fix="pass resume=auto to continue that run, or use a new run_dir")
        return None
    if resume == "auto":
        return _auto_tag(ckpt_dir, warn)
    if not (ckpt_dir / resume).is_dir():
        raise CheckpointError(f"no such tag {resume!r}", where=f"resume={resume}", fix=tag_listing(ckpt_dir))
    if not is_complete(ckpt_dir / resume):
        raise CheckpointError(f"{ckpt_dir / resume} is incomplete (its save was interrupted)",
                              where=f"resume={resume}", fix="resume=auto takes the newest complete checkpoint")
    damage = damaged_file(ckpt_dir / resume)
    if damage:
        raise CheckpointError(f"checkpoint file {damage}", where=f"resume={resume}",
                              fix=f"resume=auto takes the newest loadable checkpoint; {tag_listing(ckpt_dir)}")
    return resume


def resolve_resume(ckpt_dir: Path, resume: str | None) -> str | None:
    """The tag to resume from, decided on rank 0 and broadcast so that every rank agrees.
    A fresh run (resume=None) refuses a run directory that already holds checkpoints."""
    decision = [None]
    if comm.rank() == 0:
        try:
            decision = [choose_resume_tag(ckpt_dir, resume)]
        except CheckpointError as exc:
            decision = [exc]
    comm.broadcast_object_list(decision, src=0)
    if isinstance(decision[0], Exception):
        raise decision[0]
    return decision[0]


def load(engine, ckpt_dir: Path, tag: str) -> dict:
    """Restore engine state and this rank's own state; returns the per-rank state dict."""
    rank, world = comm.rank(), comm.world_size()
    path = ckpt_dir / tag / f"higgs_rank{rank}.pt"
    missing = torch.tensor([0.0 if path.exists() else 1.0])  # on the CPU: comm moves it where NCCL wants it
    comm.all_reduce(missing)  # every rank raises together instead of the others hanging
    if missing.item():
        raise FileNotFoundError(f"{ckpt_dir / tag}: {int(missing.item())} rank(s) have no higgs_rank*.pt: the "
                                f"checkpoint was written by a different world size or is incomplete")
    state = safe_load(path)
    if state["world_size"] != world:
        raise RuntimeError(f"checkpoint {tag} was written with world size {state['world_size']}, this run has "
                           f"{world}: exact data resumption needs the same number of ranks")
    engine.checkpoint_engine.load = safe_load  # DeepSpeed's own loader passes weights_only=False
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}")
    set_rng_state(state["rng"])
    return state
