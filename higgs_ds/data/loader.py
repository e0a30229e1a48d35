"""Streaming, exactly resumable loader of model batches (the training loop's data API).

    loader = build_loader(LoaderConfig(shards="data/demo/train"), tokenizer, family.make_renderer, rank, world_size)
    loader.load_state_dict(saved)          # optional, before iterating
    for step, batch in zip(range(steps), loader):   # infinite: every rank stops at the same step
        ...
        saved = loader.state_dict()        # store per rank with the checkpoint
        metrics = loader.metrics()         # padding fraction, skipped samples, corrupt shards

Guarantees:

* **Fixed steps.** The stream is infinite (epochs follow each other), so every rank yields as many
  batches as the loop asks for; nothing hangs on uneven shards.
* **Exact resumption.** Each DataLoader worker plays a deterministic stream (see
  :mod:`higgs_ds.data.stream`), and batches arrive round-robin from the workers. The state is, per
  logical worker, ``(epoch, batches taken in that epoch)`` plus which worker is next. Restoring replays
  the current epoch of each worker (reading and tokenising, not collating) and drops the batches
  already taken, so the batches after a resume equal those of an uninterrupted run. The cost of a
  resume is at most one epoch of one worker's shard slice.
* **Same topology.** The state is only valid for the same world size, worker count, seed and shard
  list; anything else raises :class:`DataStateMismatchError` with an explanation, unless
  ``LoaderConfig.on_topology_change="restart_epoch"`` (then every worker restarts at the beginning of
  the furthest saved epoch; samples of that epoch may repeat).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from higgs_ds.data.renderer import MakeRenderer
from higgs_ds.data.shards import INDEX_NAME, index_spec, list_shards, load_index
from higgs_ds.data.stream import StreamConfig, WorkerStream

STATE_VERSION = 1
log = logging.getLogger(__name__)


class RankDataExhausted(RuntimeError):
    """A loader worker's epoch produced no batch: every sample of its shards was skipped (corrupt, bad or too
    long). Raised in the worker; DataLoader re-raises it by type in the rank, which reports it to all ranks."""


class DataStateMismatchError(RuntimeError):
    """A saved loader state cannot be restored exactly in this run."""


@dataclass(frozen=True)
class LoaderConfig:
    shards: str  # a split folder holding shard-*.tar and shards.json
    num_workers: int = 2  # DataLoader worker processes; 0 = load in the training process
    stream: StreamConfig = field(default_factory=StreamConfig)
    prefetch_factor: int = 4
    pin_memory: bool = False
    on_topology_change: Literal["error", "restart_epoch"] = "error"

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError(f"invalid data config {self}")
        if self.on_topology_change not in ("error", "restart_epoch"):
            raise ValueError(f"on_topology_change must be 'error' or 'restart_epoch', got {self.on_topology_change!r}")


@dataclass
class _WorkerPosition:
    epoch: int = 0
    batches_in_epoch: int = 0


def _exit_on_stop_signals(_worker_id: int) -> None:
    """Slurm sends SIGTERM/SIGUSR1 to every process of a job step, a terminal SIGINT/SIGHUP to its whole
    process group. The rank decides when to stop (it checkpoints at the step boundary); a worker ends
    cleanly on SIGTERM: exit 0, which the rank does not treat as a crash (torch's own handler dies by the
    signal when anyone but the parent sends it), and ignores the others (no KeyboardInterrupt trace)."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for sig in (signal.SIGUSR1, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _identity(x):
    return x


class _RankStreams(IterableDataset):
    """What DataLoader workers run: DataLoader worker ``i`` plays logical worker ``(i + first) % W`` so a
    resumed loader continues the round-robin where the saved one stopped."""

    def __init__(self, cfg: LoaderConfig, spec, shards: list[str], expected_samples: dict[str, int], tokenizer,
                 make_renderer: MakeRenderer, rank: int, world_size: int, positions: list[_WorkerPosition],
                 first: int) -> None:
        self.cfg, self.spec, self.shards, self.expected_samples = cfg, spec, shards, expected_samples
        self.tokenizer, self.make_renderer = tokenizer, make_renderer
        self.rank, self.world_size, self.positions, self.first = rank, world_size, positions, first

    def __iter__(self):
        info = get_worker_info()
        num_streams = len(self.positions)
        worker = ((info.id if info else 0) + self.first) % num_streams
        stream = WorkerStream(self.cfg.stream, self.spec, self.shards, self.tokenizer, self.make_renderer, self.rank,
                              self.world_size, worker, num_streams, self.expected_samples)
        epoch, skip = self.positions[worker].epoch, self.positions[worker].batches_in_epoch
        while True:
            produced = 0
            for produced, samples in enumerate(stream.batches(epoch), start=1):
                if produced <= skip:
                    stream.counters.take()  # these events were counted before the checkpoint
                    continue
                batch = stream.collate(samples)
                meta = {"worker": worker, "epoch": epoch, "batches_in_epoch": produced,
                        "real_tokens": sum(len(s) for s in samples), "slots": batch["input_ids"].numel(),
                        "audio_frames": sum(s.audio_frames for s in samples), **stream.counters.take()}
                yield batch, meta
            if produced == 0:
                raise RankDataExhausted(f"rank {self.rank} worker {worker}: epoch {epoch} produced no batch; its "
                                        f"shards hold no usable sample (see the warnings above)")
            epoch, skip = epoch + 1, 0


class StreamingLoader:
    """Iterable of contract batches (see :mod:`higgs_ds.data.collate`) with ``state_dict`` /
    ``load_state_dict`` and ``metrics``."""

    def __init__(self, cfg: LoaderConfig, tokenizer, make_renderer: MakeRenderer, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        make_renderer(tokenizer, 1)  # fail fast on a tokenizer without the model family's tokens
        self.cfg, self.tokenizer, self.make_renderer = cfg, tokenizer, make_renderer
        self.rank, self.world_size = rank, world_size
        index = load_index(cfg.shards)
        self.spec = index_spec(index, f"{cfg.shards}/{INDEX_NAME}")  # what the codes mean, from the builder
        self.shards = list_shards(cfg.shards, index)
        self.expected_samples = {path: s["samples"] for path, s in zip(self.shards, index["shards"], strict=True)}
        self.fingerprint = hashlib.sha256(json.dumps(
            [(s["name"], s["samples"]) for s in index["shards"]]).encode()).hexdigest()[:16]
        self.num_streams = max(1, cfg.num_workers)
        self.positions = [_WorkerPosition() for _ in range(self.num_streams)]
        self.batches_taken = 0
        self.totals = {"corrupt_shards": 0, "bad_samples": 0, "too_long_samples": 0, "real_tokens": 0, "slots": 0,
                       "audio_frames": 0}
        self.last_padding_fraction = 0.0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        first = self.batches_taken % self.num_streams
        dataset = _RankStreams(self.cfg, self.spec, self.shards, self.expected_samples, self.tokenizer,
                               self.make_renderer, self.rank, self.world_size, [_WorkerPosition(**asdict(p)) for p in self.positions], first)
        extra = {"prefetch_factor": self.cfg.prefetch_factor} if self.cfg.num_workers > 0 else {}
        # An own generator: DataLoader draws its worker base seed from it, and from the global torch RNG
        # otherwise, which would shift the training RNG (dropout) depending on when the loader starts.
        loader = DataLoader(dataset, batch_size=None, num_workers=self.cfg.num_workers, collate_fn=_identity,
                            pin_memory=self.cfg.pin_memory, in_order=True, worker_init_fn=_exit_on_stop_signals,
                            generator=torch.Generator(), **extra)
        for batch, meta in loader:
            expected = (self.batches_taken) % self.num_streams
            if meta["worker"] != expected:  # the round-robin order is what makes the state exact
                raise RuntimeError(f"batch came from worker {meta['worker']}, expected {expected}")
            self.positions[meta["worker"]] = _WorkerPosition(meta["epoch"], meta["batches_in_epoch"])
            self.batches_taken += 1
            for key in self.totals:
                self.totals[key] += meta[key]
            self.last_padding_fraction = 1.0 - meta["real_tokens"] / meta["slots"]
            yield batch

    # ---- checkpointing ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "rank": self.rank, "world_size": self.world_size,
                "num_workers": self.num_streams, "seed": self.cfg.stream.seed, "shards": self.fingerprint,
                "batches_taken": self.batches_taken, "workers": [asdict(p) for p in self.positions],
                "totals": dict(self.totals)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataStateMismatchError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        if state["rank"] != self.rank:
            raise DataStateMismatchError(f"this is rank {self.rank} but the loader state belongs to rank "
                                         f"{state['rank']}: load each rank's own data state")
        problems = []
        for key, now in (("world_size", self.world_size), ("num_workers", self.num_streams),
                         ("seed", self.cfg.stream.seed), ("shards", self.fingerprint)):
            if state[key] != now:
                problems.append(f"{key} was {state[key]!r}, now {now!r}")
        self.totals = dict(state["totals"])
        if not problems:
            self.positions = [_WorkerPosition(**p) for p in state["workers"]]
            self.batches_taken = state["batches_taken"]
            return
        explanation = (f"cannot resume the data stream exactly ({'; '.join(problems)}). Each rank's worker streams "
                       f"are a function of world size, worker count, seed and shard list, so a different value "
                       f"gives a different sample order. Restore the original settings, or set "
                       f"on_topology_change='restart_epoch' to restart at the beginning of the saved epoch.")
        if self.cfg.on_topology_change == "error":
            raise DataStateMismatchError(explanation)
        epoch = max(p["epoch"] for p in state["workers"])
        self.positions = [_WorkerPosition(epoch, 0) for _ in range(self.num_streams)]
        self.batches_taken = 0

    # ---- metrics -----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Cumulative counters for logging (prefix them as you like)."""
        slots = max(1, self.totals["slots"])
        return {"padding_fraction": 1.0 - self.totals["real_tokens"] / slots,
                "last_padding_fraction": self.last_padding_fraction,
                "corrupt_shards": self.totals["corrupt_shards"], "bad_samples": self.totals["bad_samples"],
                "too_long_samples": self.totals["too_long_samples"], "audio_frames": self.totals["audio_frames"],
                "epoch": min(p.epoch for p in self.positions), "batches": self.batches_taken}


def build_loader(cfg: LoaderConfig, tokenizer, make_renderer: MakeRenderer, rank: int = 0, world_size: int = 1,
                 state: dict | None = None) -> StreamingLoader:
    """`make_renderer`: the model family's (`ModelFamily.make_renderer`), which renders and collates samples."""
    loader = StreamingLoader(cfg, tokenizer, make_renderer, rank, world_size)
    if state is not None:
        loader.load_state_dict(state)
    return loader
