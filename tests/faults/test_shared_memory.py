"""DeepSpeed's CPU allreduce keeps a ~70 MB shared-memory segment per rank in /dev/shm and never
removes it; before the fix every 2-rank run left 140 MB of RAM behind, and a CI suite of ~130 runs ran
the machine out of memory. A run (finished, or killed after its setup) must leave nothing there."""

from __future__ import annotations

import pytest

from higgs_ds.train.checkpointing import FAULT_ENV
from higgs_ds.train.distributed import SHM_DIR
from tests.harness import output, train

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this machine")]


def segments() -> set:
    return set(SHM_DIR.glob("deepspeed_allreduce_buffer_*"))


def test_a_finished_run_leaves_no_allreduce_segment(tmp_path, random_data):
    before = segments()
    proc = train(tmp_path / "run", random_data, "steps=2")
    assert proc.returncode == 0, output(proc)
    assert segments() - before == set()


def test_a_killed_run_leaves_no_allreduce_segment(tmp_path, random_data):
    before = segments()  # rank 1 SIGKILLs itself mid-save; the launcher then kills rank 0
    proc = train(tmp_path / "run", random_data, "steps=4", "save_every=2", **{FAULT_ENV: "engine_saved:2:1:kill"})
    assert proc.returncode != 0, output(proc)
    assert segments() - before == set()
