"""Shards overwritten with garbage or cut short while a 2-rank run reads them: skipped, counted in
`data/corrupt_shards`, warned once per shard, the run goes on; under strict mode it stops naming the shard."""

from __future__ import annotations

import re
import shutil
import time

import numpy as np
import pytest

from higgs_ds.train.metrics import read_metrics
from tests.harness import finish, last_metrics, output, start_train, train

pytestmark = pytest.mark.integration

GARBAGE, CUT = "shard-000003.tar", "shard-000005.tar"


def _copy(random_data: dict, dst) -> dict:
    shutil.copytree(random_data["train"], dst)
    return {**random_data, "train": dst}


def _wait_for_step(run_dir, step: int, proc, timeout: float = 900) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(r["step"] >= step for r in read_metrics(run_dir / "metrics.jsonl")):
            return
        time.sleep(0.5)
    raise AssertionError(f"the run never reached step {step}: {output(finish(proc))}")


def test_shards_corrupted_during_a_run_are_skipped_counted_and_warned_once(tmp_path, random_data):
    data = _copy(random_data, tmp_path / "train")
    garbage = data["train"] / GARBAGE
    garbage.write_bytes(np.random.default_rng(0).bytes(garbage.stat().st_size))
    run = tmp_path / "run"
    proc = start_train(run, data, "steps=40", "save_every=1000")
    _wait_for_step(run, 3, proc)
    cut = data["train"] / CUT  # mid-member: the rest of this epoch's read and every later one fail
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 5])
    done = finish(proc)
    assert done.returncode == 0, output(done)
    metrics = last_metrics(run)
    assert metrics["step"] == 40
    logs = done.stdout + done.stderr
    warned = {name: len(re.findall(rf"{name}[^\n]*\(corrupt_shards #", logs)) for name in (GARBAGE, CUT)}
    # each rank warns about a shard once, however often it meets it again (about once per epoch)
    assert all(1 <= n <= 2 for n in warned.values()), (warned, logs[-4000:])
    assert metrics["data/corrupt_shards"] > sum(warned.values()), (metrics, warned)
    assert metrics["data/epoch"] >= 2


def test_strict_mode_stops_with_an_error_naming_the_shard(tmp_path, random_data):
    data = _copy(random_data, tmp_path / "train")
    (data["train"] / GARBAGE).write_bytes(b"not a tar file" * 100)
    proc = train(tmp_path / "run", data, "steps=40", "save_every=1000", "data.stream.strict=true")
    assert proc.returncode != 0, output(proc)
    assert re.search(rf"CorruptShardError: [^\n]*{GARBAGE}", proc.stdout + proc.stderr), output(proc)


def test_a_rank_whose_shards_hold_no_usable_sample_is_named_once_by_rank_0(tmp_path, random_data):
    """Seven of eight shards are garbage (the index still counts them, so preflight cannot tell): the loader
    workers that get only garbage run dry in the first epoch. Every rank stops; rank 0 alone names the dry
    ranks, and no rank blames a lost connection or prints a traceback."""
    data = _copy(random_data, tmp_path / "train")
    for shard in sorted(data["train"].glob("shard-*.tar"))[1:]:
        shard.write_bytes(b"not a tar file" * 100)
    proc = train(tmp_path / "run", data, "steps=40", "save_every=1000")
    text = proc.stdout + proc.stderr
    errors = re.findall(r"^(?:rank \d+: )?error: .*$", proc.stderr, re.M)
    assert proc.returncode == 2 and len(errors) == 1, output(proc)
    assert errors[0].startswith("error: no usable sample left for rank"), output(proc)
    assert "Traceback" not in text and "Connection closed" not in text, output(proc)
