"""A stop signal that reaches the loader's workers while the rank waits for its next batch (Slurm signals
every process of a job step): the workers exit, the batch in flight cannot be read, and the step must end
the run at the step before, with the loader rewound to it, not with an error or a skipped batch."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from types import SimpleNamespace

import pytest
import torch

from higgs_ds.data.loader import LoaderConfig, build_loader
from higgs_ds.data.stream import StreamConfig
from higgs_ds.models.higgs_v2.prompt import ChatMLRenderer
from higgs_ds.train import loop, stopping

STREAM = StreamConfig(shuffle_buffer=8, bucket_pool=16, max_tokens=2048, max_seq_len=512)


def _trainer(folder, tokenizer, grad_accum: int = 2):
    # one worker: its batches arrive in order, so none is already unpickled (and readable) when it dies
    loader = build_loader(LoaderConfig(shards=str(folder), num_workers=1, prefetch_factor=2, stream=STREAM),
                          tokenizer, ChatMLRenderer)
    batches = iter(loader)
    return SimpleNamespace(loader=loader, batches=batches, next_batch=lambda: next(batches), rank=0, world=1,
                           device=torch.device("cpu"), cfg=SimpleNamespace(grad_accum=grad_accum),
                           other_children=set(multiprocessing.active_children()))


def _kill_workers(trainer) -> None:
    """SIGTERM to the loader's worker, as the job's signal reaches it, once it has prefetched."""
    time.sleep(0.5)
    (worker,) = set(multiprocessing.active_children()) - trainer.other_children
    os.kill(worker.pid, signal.SIGTERM)
    worker.join(10)
    assert worker.exitcode == 0  # a clean exit, which torch does not count as a worker crash


@pytest.fixture
def reset_stop():
    yield
    stopping._received["reason"] = None


def test_a_stop_signal_during_the_read_stops_at_the_step_before_with_the_loader_rewound(
        synthetic_split, tokenizer, reset_stop):
    trainer = _trainer(synthetic_split[0], tokenizer)
    assert len(loop.next_micro_batches(trainer)) == 2  # one step trained
    state = trainer.loader.state_dict()
    assert state["batches_taken"] == 2
    read = trainer.next_batch

    def signal_after_the_first_read():  # the job's SIGTERM lands between this step's two micro-batches
        batch = read()
        _kill_workers(trainer)
        stopping._record("SIGTERM")  # what the rank's own handler does
        trainer.next_batch = read
        return batch

    trainer.next_batch = signal_after_the_first_read
    assert loop.next_micro_batches(trainer) is None
    assert trainer.loader.state_dict() == state  # what the checkpoint saves: the batch read is given back
    assert trainer.loader.batches_taken == 2


def test_without_a_stop_signal_a_dead_worker_is_an_error(synthetic_split, tokenizer, reset_stop):
    trainer = _trainer(synthetic_split[0], tokenizer, grad_accum=1)
    loop.next_micro_batches(trainer)
    _kill_workers(trainer)
    with pytest.raises(Exception):  # noqa: B017 - torch's own error for a worker gone; it must not be swallowed
        loop.next_micro_batches(trainer)
