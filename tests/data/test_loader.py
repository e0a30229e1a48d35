import logging
import re
from itertools import islice

import pytest
import torch

from higgs_ds.data.eval_batches import build_eval_batches
from higgs_ds.data.loader import DataStateMismatchError, LoaderConfig, build_loader
from higgs_ds.data.stream import StreamConfig, WorkerStream, assign_shards
from higgs_ds.models.higgs_v2.prompt import ChatMLRenderer
from tests.data.synthetic import SPEC

MAKE_RENDERER = ChatMLRenderer  # the demo tokenizer's family renders these batches


def _cfg(folder, **stream):
    base = dict(shuffle_buffer=8, bucket_pool=16, max_tokens=2048, max_seq_len=512)
    return LoaderConfig(shards=str(folder), num_workers=2, prefetch_factor=2, stream=StreamConfig(**{**base, **stream}))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted_run_over_two_epochs(synthetic_split, tokenizer):
    folder, _ = synthetic_split
    cfg = _cfg(folder)
    reference_loader = build_loader(cfg, tokenizer, MAKE_RENDERER)
    reference = list(islice(reference_loader, 40))
    assert reference_loader.metrics()["epoch"] >= 2  # the run crosses epoch boundaries on both workers

    for cut in (7, 21):  # odd cut: the next batch comes from worker 1
        first = build_loader(cfg, tokenizer, MAKE_RENDERER)
        head = list(islice(first, cut))
        state = first.state_dict()
        resumed = build_loader(cfg, tokenizer, MAKE_RENDERER, state=state)
        tail = list(islice(resumed, 40 - cut))
        assert all(_same(x, y) for x, y in zip(head + tail, reference, strict=True))
        assert resumed.metrics()["batches"] == 40


def test_two_ranks_read_disjoint_shards_and_samples(synthetic_split, tokenizer):
    folder, ids = synthetic_split
    shards = [str(folder / f"shard-{i:06d}.tar") for i in range(len(ids))]
    for epoch in range(3):
        per_slot = [assign_shards(shards, 0, epoch, r, 2, w, 2)[0] for r in range(2) for w in range(2)]
        flat = [s for slot in per_slot for s in slot]
        assert sorted(flat) == sorted(shards) and all(len(s) == 2 for s in per_slot)
    keys = {}
    for rank in range(2):
        stream_keys = []
        for worker in range(2):
            stream = WorkerStream(_cfg(folder).stream, SPEC, shards, tokenizer, MAKE_RENDERER, rank, 2, worker, 2)
            stream_keys += [raw["__key__"] for raw in stream.raw_samples(epoch=0)]
        keys[rank] = set(stream_keys)
    assert not keys[0] & keys[1] and keys[0] | keys[1] == {i for shard in ids for i in shard}


def test_fewer_shards_than_slots_splits_by_sample(tmp_path, tokenizer, make_split):
    ids = make_split(tmp_path / "eval", num_shards=1, per_shard=10)
    seen = []
    for rank in range(2):
        stream = WorkerStream(_cfg(tmp_path / "eval").stream, SPEC, [str(tmp_path / "eval" / "shard-000000.tar")],
                              tokenizer, MAKE_RENDERER, rank, 2, 0, 1)
        seen.append([raw["__key__"] for raw in stream.raw_samples(0)])
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == sorted(ids[0])
    batches = [build_eval_batches(_cfg(tmp_path / "eval"), tokenizer, MAKE_RENDERER, rank, 3) for rank in range(3)]
    assert len({len(b) for b in batches}) == 1  # every rank runs the same number of forwards
    real = sum(int(b["attention_mask"].shape[0]) for rank in batches for b in rank if (b["labels"] != -100).any())
    assert real == 10


def test_topology_change_is_explained(synthetic_split, tokenizer):
    folder, _ = synthetic_split
    loader = build_loader(_cfg(folder), tokenizer, MAKE_RENDERER, rank=0, world_size=2)
    list(islice(loader, 3))
    state = loader.state_dict()
    with pytest.raises(DataStateMismatchError, match="world_size was 2, now 4"):
        build_loader(_cfg(folder), tokenizer, MAKE_RENDERER, rank=0, world_size=4, state=state)
    fewer_workers = LoaderConfig(shards=str(folder), num_workers=1, stream=_cfg(folder).stream)
    with pytest.raises(DataStateMismatchError, match="num_workers was 2, now 1"):
        build_loader(fewer_workers, tokenizer, MAKE_RENDERER, rank=0, world_size=2, state=state)
    with pytest.raises(DataStateMismatchError, match="belongs to rank 0"):
        build_loader(_cfg(folder), tokenizer, MAKE_RENDERER, rank=1, world_size=2, state=state)
    restart = LoaderConfig(shards=str(folder), num_workers=1, stream=_cfg(folder).stream,
                         on_topology_change="restart_epoch")
    assert next(iter(build_loader(restart, tokenizer, MAKE_RENDERER, 0, 2, state=state)))["input_ids"].ndim == 2


def test_corrupt_shard_is_skipped_and_counted_or_fatal_when_strict(synthetic_split, tokenizer, caplog):
    folder, _ = synthetic_split
    for name, cut in (("shard-000003.tar", 3000), ("shard-000005.tar", 2000)):
        shard = folder / name  # truncated at a member boundary (tarfile ends quietly) and mid-member
        shard.write_bytes(shard.read_bytes()[:cut])
    cfg = LoaderConfig(shards=str(folder), num_workers=0, stream=_cfg(folder).stream)
    loader = build_loader(cfg, tokenizer, MAKE_RENDERER)
    with caplog.at_level(logging.WARNING):
        list(islice(loader, 30))
    metrics = loader.metrics()
    assert metrics["corrupt_shards"] >= 2 and metrics["epoch"] >= 1
    warnings = [r.message for r in caplog.records if "corrupt_shards" in r.message]
    # once per shard, though each was read (and counted) in every epoch
    assert sorted(re.search(r"shard-\d+\.tar", w).group() for w in warnings) == [
        "shard-000003.tar", "shard-000005.tar"], warnings
    strict = LoaderConfig(shards=str(folder), num_workers=0, stream=StreamConfig(**{**_cfg(folder).stream.__dict__,
                                                                                  "strict": True}))
    with pytest.raises(Exception, match=r"shard-00000[35]"):
        list(islice(build_loader(strict, tokenizer, MAKE_RENDERER), 30))


def test_bucketing_keeps_padding_low_and_respects_budget(synthetic_split, tokenizer):
    folder, _ = synthetic_split
    # Same batch size; the unbucketed loader batches samples in stream order (pool = one batch).
    bucketed = build_loader(_cfg(folder, bucket_pool=64, max_batch_size=6), tokenizer, MAKE_RENDERER)
    unbucketed = build_loader(_cfg(folder, bucket_pool=6, max_batch_size=6), tokenizer, MAKE_RENDERER)
    for batch in islice(bucketed, 12):
        assert batch["input_ids"].numel() <= 2048 and batch["input_ids"].shape[1] % 8 == 0
    list(islice(unbucketed, 12))
    padded, unpadded = bucketed.metrics()["padding_fraction"], unbucketed.metrics()["padding_fraction"]
    assert padded < 0.5 * unpadded, (padded, unpadded)


def test_too_long_samples_are_counted(synthetic_split, tokenizer):
    folder, _ = synthetic_split
    loader = build_loader(LoaderConfig(shards=str(folder), num_workers=0, stream=StreamConfig(max_seq_len=120,
                                                                                           max_tokens=1024)), tokenizer,
                          MAKE_RENDERER)
    for batch in islice(loader, 5):
        assert batch["attention_mask"].sum(1).max() <= 120
    assert loader.metrics()["too_long_samples"] > 0


@pytest.mark.parametrize("n_samples, world", [(5, 4), (10, 8), (4, 4)])
def test_eval_batches_feed_every_rank_for_awkward_sizes(tmp_path, tokenizer, make_split, n_samples, world):
    make_split(tmp_path / "eval", num_shards=1, per_shard=n_samples)
    per_rank = [build_eval_batches(_cfg(tmp_path / "eval"), tokenizer, MAKE_RENDERER, rank, world)
                for rank in range(world)]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) >= 1
    real = sum(int(b["attention_mask"].shape[0]) for rank in per_rank for b in rank if (b["labels"] != -100).any())
    assert real == n_samples  # every sample evaluated exactly once across ranks
