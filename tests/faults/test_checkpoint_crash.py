"""A rank SIGKILLed at each point of a checkpoint save, then `resume=auto`: the run continues from the
last complete checkpoint with the per-step losses of an uninterrupted run, a half-written tag is never
taken for a complete one, and rotation never leaves zero complete checkpoints."""

from __future__ import annotations

import pytest

from higgs_ds.train.checkpointing import COMPLETE, FAULT_ENV, complete_tags, is_complete, latest_tag
from tests.harness import RESUME_STEPS, losses, output, train

pytestmark = pytest.mark.integration

# (fault, expected `latest` after the crash, expected complete tags after the crash). Each run resumes
# from the previous one's crash and is killed in turn at the next save point.
CHAIN = [
    # rank 1 dies having written half of its own state file at step 4: step 2 stays the latest
    ("rank_state_saved:4:1:torn", "step000002", ["step000002"]),
    # rank 0 dies halfway through a DeepSpeed shard of step 6 (step 4 re-saved over the torn tag)
    ("engine_saved:6:0:torn", "step000004", ["step000002", "step000004"]),
    # step 8 is marked complete but `latest` has not moved yet: `latest` still wins
    ("marked:8:0", "step000006", ["step000004", "step000006", "step000008"]),
    # `latest` moved to step 8 but the old tags were not rotated yet
    ("latest_moved:8:0", "step000008", ["step000004", "step000006", "step000008"]),
    # killed between two deletions of the rotation at step 10
    ("rotating:10:0", "step000010", ["step000006", "step000008", "step000010"]),
]


def test_kill_at_each_save_point_then_resume_auto_matches_an_uninterrupted_run(tmp_path, random_data, reference_run):
    run, ckpts = tmp_path / "crashed", tmp_path / "crashed" / "checkpoints"
    for i, (fault, latest, complete) in enumerate(CHAIN):
        proc = train(run, random_data, *RESUME_STEPS, *(["resume=auto"] if i else []), **{FAULT_ENV: fault})
        assert proc.returncode != 0, output(proc)
        assert latest_tag(ckpts) == latest, (fault, output(proc))
        assert complete_tags(ckpts) == complete, fault
        for tag_dir in ckpts.glob("step*"):  # whatever else is there is recognisably incomplete
            if tag_dir.name not in complete:
                assert not is_complete(tag_dir), tag_dir
        if i:
            assert f"resumed from {ckpts / CHAIN[i - 1][1]}" in proc.stdout + proc.stderr, output(proc)
        crashed = losses(run, repeats=True)  # steps after the last complete save are logged again on resume
        assert crashed == {s: v for s, v in losses(reference_run).items() if s in crashed}, fault
    # the crashed tags of the chain were re-saved whole, and the rotation finishes at the next save
    assert not (ckpts / "step000002").exists()
    assert all((ckpts / t / COMPLETE).is_file() for t in complete_tags(ckpts))
    assert losses(run, repeats=True) == losses(reference_run)
