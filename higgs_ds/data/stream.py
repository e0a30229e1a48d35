"""One worker's deterministic sample and batch stream.

The stream of logical worker ``w`` on rank ``r`` in epoch ``e`` is a pure function of
``(seed, e, r, w, world_size, num_workers, shard list)``:

1. Shards are permuted by ``Random(seed, "shards", e)`` (the same permutation on every rank), and
   slot ``r * num_workers + w`` takes every ``world_size * num_workers``-th shard, so ranks and workers
   read disjoint shards. With fewer shards than slots (small eval sets), every slot reads all shards
   and keeps every n-th sample instead, still disjoint.
2. Raw samples pass a shuffle buffer seeded by ``(seed, e, r, w)``, are decoded, turned into ChatML and
   rendered.
3. Rendered samples are pooled, sorted by length and cut into batches under a token budget
   (length bucketing), and the batch order within a pool is shuffled with the same seeded RNG.

Because nothing else feeds the stream, the position "batch b of epoch e" fully describes a worker's
state, and replaying epoch e and dropping b batches restores it exactly.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import webdataset as wds

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.collate import CollatorConfig, padded_length
from higgs_ds.data.render import RenderedSample
from higgs_ds.data.renderer import MakeRenderer
from higgs_ds.data.schema import PromptConfig
from higgs_ds.data.shards import iter_tar_samples, tar_sample_to_utterance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamConfig:
    seed: int = 0
    shuffle_buffer: int = 256  # raw samples; 1 disables sample shuffling
    bucket_pool: int = 512  # rendered samples sorted together; larger = less padding, more memory
    max_tokens: int = 8192  # per batch: batch_size x padded length stays within this budget
    max_batch_size: int = 64
    max_seq_len: int = 4096  # longer samples are skipped and counted
    pad_to_multiple_of: int = 8
    strict: bool = False  # corrupt shards and undecodable samples raise instead of being skipped
    warn_every: int = 100  # rate limit: warn on the 1st, then every n-th event of a kind
    prompt: PromptConfig = PromptConfig()

    def __post_init__(self) -> None:
        if min(self.shuffle_buffer, self.bucket_pool, self.max_batch_size, self.warn_every) < 1:
            raise ValueError(f"invalid stream config {self}")
        if self.max_seq_len > self.max_tokens:
            raise ValueError(f"max_seq_len {self.max_seq_len} exceeds the batch token budget {self.max_tokens}")
        if self.max_seq_len % self.pad_to_multiple_of:
            raise ValueError(f"max_seq_len {self.max_seq_len} must be a multiple of {self.pad_to_multiple_of}")


class CorruptShardError(RuntimeError):
    """A shard that cannot be read (or holds fewer samples than shards.json says), under strict mode."""


@dataclass
class StreamCounters:
    """Events since the last reset; the loader sums them into its metrics."""

    corrupt_shards: int = 0
    bad_samples: int = 0
    too_long_samples: int = 0
    _seen: dict = field(default_factory=dict)  # lifetime counts per kind, for rate limiting only
    _warned: set = field(default_factory=set)  # shards already warned about

    def record(self, kind: str, message: str, every: int, shard: str | None = None) -> None:
        """Count an event; warn on the first of each shard, else on the 1st and every n-th of its kind."""
        setattr(self, kind, getattr(self, kind) + 1)
        seen = self._seen[kind] = self._seen.get(kind, 0) + 1
        if shard is not None:
            if shard not in self._warned:
                self._warned.add(shard)
                log.warning("%s (%s #%d; later failures of this shard are counted, not warned)", message, kind, seen)
        elif seen == 1 or seen % every == 0:
            log.warning("%s (%s #%d)", message, kind, seen)

    def take(self) -> dict[str, int]:
        out = {"corrupt_shards": self.corrupt_shards, "bad_samples": self.bad_samples,
               "too_long_samples": self.too_long_samples}
        self.corrupt_shards = self.bad_samples = self.too_long_samples = 0
        return out


def assign_shards(shards: list[str], seed: int, epoch: int, rank: int, world_size: int, worker: int,
                  num_workers: int) -> tuple[list[str], int, int]:
    """(shards to read, sample stride, sample offset) for one slot in one epoch."""
    order = sorted(shards)
    random.Random(f"{seed}:shards:{epoch}").shuffle(order)
    slots, slot = world_size * num_workers, rank * num_workers + worker
    if len(order) >= slots:
        return order[slot::slots], 1, 0
    return order, slots, slot


def bucket_batches(samples: list[RenderedSample], cfg: StreamConfig, rng: random.Random) -> list[list[RenderedSample]]:
    """Sort a pool by length and cut it greedily into batches whose padded size fits the token budget;
    the batch order is shuffled so that lengths do not trend within an epoch."""
    batches, current = [], []
    for sample in sorted(samples, key=len):  # stable: ties keep stream order
        longest = padded_length(len(sample), cfg.pad_to_multiple_of)  # sorted, so this sample is the longest
        if current and (longest * (len(current) + 1) > cfg.max_tokens or len(current) >= cfg.max_batch_size):
            batches.append(current)
            current = []
        current.append(sample)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


class WorkerStream:
    def __init__(self, cfg: StreamConfig, spec: AudioSpec, shards: list[str], tokenizer, make_renderer: MakeRenderer,
                 rank: int, world_size: int, worker: int, num_workers: int,
                 expected_samples: dict[str, int] | None = None) -> None:
        self.cfg, self.spec, self.shards = cfg, spec, shards
        self.expected_samples = expected_samples or {}  # from shards.json: catches silently truncated tars
        self._shard, self._shard_failed = "", False
        self.rank, self.world_size, self.worker, self.num_workers = rank, world_size, worker, num_workers
        self.renderer = make_renderer(tokenizer, spec.num_codebooks)  # the model family's prompt layout
        self.collate = self.renderer.collator(CollatorConfig.from_spec(spec, cfg.pad_to_multiple_of))
        self.counters = StreamCounters()

    def _rng(self, epoch: int, purpose: str) -> random.Random:
        return random.Random(f"{self.cfg.seed}:{purpose}:{epoch}:{self.rank}:{self.worker}")

    def _skip_shard_error(self, exc: Exception) -> bool:
        """webdataset handler for open/truncation errors: count, warn (once per shard), go on."""
        self._shard_failed = True
        self.counters.record("corrupt_shards", f"skipping the rest of unreadable shard {self._shard}: {exc}",
                             self.cfg.warn_every, shard=self._shard)
        return True

    def _raise_shard_error(self, exc: Exception) -> bool:
        raise CorruptShardError(f"{self._shard}: {exc} (data.stream.strict=true)") from exc

    def _check_count(self, shard: str, read: int) -> None:
        # tarfile ends quietly when a file is cut at a member boundary; the index count catches that.
        expected = self.expected_samples.get(shard)
        if expected is None or read == expected or self._shard_failed:
            return
        message = f"{shard}: read {read} samples, shards.json says {expected} (truncated or replaced shard)"
        if self.cfg.strict:
            raise CorruptShardError(message)
        self.counters.record("corrupt_shards", message, self.cfg.warn_every, shard=shard)

    def raw_samples(self, epoch: int) -> Iterator[dict]:
        shards, stride, offset = assign_shards(self.shards, self.cfg.seed, epoch, self.rank, self.world_size,
                                               self.worker, self.num_workers)
        for shard in shards:
            handler = self._raise_shard_error if self.cfg.strict else self._skip_shard_error
            self._shard, self._shard_failed, read = shard, False, 0
            for sample in iter_tar_samples(shard, handler=handler):
                if read % stride == offset:
                    yield sample
                read += 1
            self._check_count(shard, read)

    def rendered_samples(self, epoch: int) -> Iterator[RenderedSample]:
        shuffled = wds.filters._shuffle(self.raw_samples(epoch), bufsize=self.cfg.shuffle_buffer,
                                        initial=self.cfg.shuffle_buffer, rng=self._rng(epoch, "samples"))
        for raw in shuffled:
            try:
                utt = tar_sample_to_utterance(raw, self.spec)
                rendered = self.renderer.render(utt, self.cfg.prompt)
            except Exception as exc:  # any decoding/rendering failure is a bad sample
                if self.cfg.strict:
                    raise
                where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
                self.counters.record("bad_samples", f"skipping bad sample {where}: {exc}", self.cfg.warn_every)
                continue
            if len(rendered) > self.cfg.max_seq_len:
                self.counters.record("too_long_samples", f"skipping {raw['__key__']}: {len(rendered)} positions > "
                                     f"max_seq_len {self.cfg.max_seq_len}", self.cfg.warn_every)
                continue
            yield rendered

    def batches(self, epoch: int) -> Iterator[list[RenderedSample]]:
        """Batches of one epoch, deterministic for (seed, epoch, rank, worker, shards)."""
        rng, pool = self._rng(epoch, "batches"), []
        for sample in self.rendered_samples(epoch):
            pool.append(sample)
            if len(pool) == self.cfg.bucket_pool:
                yield from bucket_batches(pool, self.cfg, rng)
                pool = []
        if pool:
            yield from bucket_batches(pool, self.cfg, rng)
