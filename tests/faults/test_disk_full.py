"""A checkpoint save that runs out of disk space: the run ends non-zero with one clear line, the previous
checkpoint stays complete, and `resume=auto` (with space again) continues the same loss curve.

The run directory is a small tmpfs where the test may mount one (root); elsewhere ENOSPC is injected at
the first write of the save."""

from __future__ import annotations

import errno
import re
import shutil
import subprocess

import pytest

from higgs_ds.train.checkpointing import COMPLETE, FAULT_ENV, _write_error, complete_tags, latest_tag
from tests.harness import RESUME_STEPS, losses, output, train


@pytest.fixture
def disk(tmp_path):
    """A tmpfs of 256 MiB (None when mounting is not allowed here); resized with _resize."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs",
                                                         str(mount)], capture_output=True).returncode != 0:
        yield None
        return
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _resize(mount, kib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mount)], check=True)


@pytest.mark.integration
def test_disk_full_during_a_save_keeps_the_previous_checkpoint_and_resumes(tmp_path, disk, random_data, reference_run):
    run = (disk or tmp_path) / "run"
    ckpts = run / "checkpoints"
    first = train(run, random_data, *RESUME_STEPS, "stop_at=2")
    assert first.returncode == 0 and latest_tag(ckpts) == "step000002", output(first)

    inject = {}
    if disk is None:
        inject = {FAULT_ENV: "engine_saved:4:0:enospc"}
    else:  # room for the files of the run plus half a checkpoint: the next save cannot fit
        tag_kib = sum(p.stat().st_size for p in (ckpts / "step000002").iterdir()) // 1024
        _resize(disk, shutil.disk_usage(disk).used // 1024 + tag_kib // 2)
    full = train(run, random_data, *RESUME_STEPS, "resume=auto", **inject)
    assert full.returncode != 0, output(full)
    errors = re.findall(r"^(?:rank \d+: )?error: .*$", full.stderr, re.M)  # said once, by rank 0
    assert len(errors) == 1 and errors[0].startswith("error:") and "no space left on device" in errors[0] and \
        "step000002 is still the latest complete checkpoint" in errors[0], output(full)
    assert latest_tag(ckpts) == "step000002" and complete_tags(ckpts) == ["step000002"]

    if disk is not None:
        _resize(disk, 256 * 1024)
    resumed = train(run, random_data, *RESUME_STEPS, "resume=auto")
    assert resumed.returncode == 0, output(resumed)
    assert "resumed from" in resumed.stdout + resumed.stderr and losses(run, repeats=True) == losses(reference_run)


@pytest.mark.integration
def test_a_save_failing_on_one_rank_only_is_said_once_by_rank_0(tmp_path, random_data):
    """Rank 1 alone cannot write its files (a node-local disk full): every rank learns it, no tag is left
    behind, and rank 0 says which rank failed and why, in one line, with no traceback or lost connection."""
    run = tmp_path / "run"
    done = train(run, random_data, "steps=2", "save_every=2", **{FAULT_ENV: "rank_state_saved:2:1:enospc"})
    errors = re.findall(r"^(?:rank \d+: )?error: .*$", done.stderr, re.M)
    assert done.returncode == 1 and len(errors) == 1, output(done)
    assert errors[0].startswith("error: writing checkpoint") and "failed on rank 1: no space left on device" in \
        errors[0] and "there is no earlier checkpoint" in errors[0], output(done)
    assert "Traceback" not in done.stdout + done.stderr and "Connection closed" not in done.stderr, output(done)
    assert not (run / "checkpoints" / "step000002").exists()


@pytest.mark.parametrize("exc, free, expected", [
    (OSError(errno.ENOSPC, "No space left on device"), 50 * 2**20, "no space left on device (50.0 MiB free)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), 50 * 2**20, "no space left on device"),
    (RuntimeError("x"), 0, "no space left on device (0.0 MiB free)"),
    # torch's zip writer after a short write: no errno, and another rank may have freed space since
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2800704 vs 2800596"), 3 * 2**20,
     "a write came up short: most likely no space left on device (3.0 MiB free now)"),
    (PermissionError(errno.EACCES, "Permission denied"), 50 * 2**20, "PermissionError: [Errno 13] Permission denied"),
])
def test_a_failed_save_names_its_cause(tmp_path, exc, free, expected):
    (tmp_path / "step000002").mkdir()
    (tmp_path / "step000002" / COMPLETE).write_text('{"files": {}}')
    (tmp_path / "latest").write_text("step000002")
    err = _write_error(exc, tmp_path, "step000004", free)
    assert err.errno == (errno.EIO if isinstance(exc, PermissionError) else errno.ENOSPC)
    assert f"step000004 failed: {expected}" in str(err) and "step000002 is still the latest complete" in str(err)


def test_an_out_of_space_error_is_found_behind_a_wrapper(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as outer:
        err = _write_error(outer, tmp_path, "step000002", 2**30)
    assert err.errno == errno.ENOSPC and "there is no earlier checkpoint" in str(err)
