"""launch/slurm/train.sbatch on a real two-node Slurm cluster: 2 nodes x 1 CPU rank, ZeRO-3, tiny model.

Both launch styles train the same loss curve; a killed rank ends the job non-zero within 120 s;
Slurm's preemption warning (USR1 to the batch shell) checkpoints, requeues and resumes the curve;
SIGTERM to the ranks checkpoints and a resubmission resumes the curve."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.harness import losses, tiny_overrides
from tests.slurm.cluster import job_info, logged_steps, rank_pid, sh, submit, tail, wait_for_end, wait_until

pytestmark = pytest.mark.cluster

STEPS = 40  # ~0.2 s per step here: long enough to interrupt mid-run


def _overrides(data: dict, *extra: str) -> list[str]:
    return tiny_overrides(data, f"steps={STEPS}", "log_every=1", "save_every=1000", "eval_every=0", "predict_every=0",
                          "optim.warmup_steps=2", "dist_timeout_s=60", *extra)


def _run(env: dict, root: Path, data: dict, **job_env: str) -> tuple[Path, str, dict]:
    """Submit, wait for the end, and require success; returns (run_dir, log text, job info)."""
    root.mkdir(parents=True, exist_ok=True)
    run_dir, log = root / "run", root / "job.log"
    job = submit(env, log, run_dir, _overrides(data), **job_env)
    info = wait_for_end(env, job, log)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), tail(log)
    return run_dir, log.read_text(), info


@pytest.fixture(scope="module")
def straight(slurm_cluster, random_data, tmp_path_factory):
    """The uninterrupted srun-launched run every other run is compared with."""
    return _run(slurm_cluster, tmp_path_factory.mktemp("straight"), random_data,
                HF_HOME="/tmp/hf-probe", NCCL_DEBUG="WARN", WANDB_API_KEY="not-a-real-key")


def test_srun_job_trains_on_both_nodes_and_carries_the_environment(straight):
    run_dir, log, _ = straight
    for node, rank in (("n1", 0), ("n2", 1)):
        line = next((ln for ln in log.splitlines() if ln.startswith(f"[preflight] node={node} ")), None)
        assert line is not None, log
        assert f"node_rank={rank}" in line and "HF_HOME=/tmp/hf-probe" in line and "NCCL_DEBUG=WARN" in line, line
        assert "WANDB_API_KEY=<set>" in line and "not-a-real-key" not in log, line
    assert "launcher=srun, master=127.0.0.1:" in log  # the first node's NodeAddr, not the name n1
    assert "world size 2, ZeRO stage 3" in log
    final = run_dir / "checkpoints" / f"step{STEPS:06d}"
    assert (run_dir / "checkpoints" / "latest").read_text() == final.name
    assert sorted(p.name for p in final.glob("higgs_rank*.pt")) == ["higgs_rank0.pt", "higgs_rank1.pt"]
    assert len(list(final.glob("zero_pp_rank_*_model_states.pt"))) == 2  # each rank wrote its ZeRO-3 shard
    assert list(losses(run_dir)) == list(range(1, STEPS + 1))


def test_deepspeed_launcher_per_node_trains_the_same_curve(straight, slurm_cluster, random_data, tmp_path):
    run_dir, log, _ = _run(slurm_cluster, tmp_path, random_data, LAUNCHER="deepspeed")
    for node_rank in (0, 1):
        assert f"nnodes=2, num_local_procs=1, node_rank={node_rank}" in log, tail(tmp_path / "job.log")
    assert losses(run_dir) == losses(straight[0])


def test_killed_rank_ends_the_job_nonzero_within_120s(slurm_cluster, random_data, tmp_path):
    env, run_dir, log = slurm_cluster, tmp_path / "run", tmp_path / "job.log"
    job = submit(env, log, run_dir, _overrides(random_data, "steps=100000"))
    wait_until(lambda: logged_steps(run_dir) >= 2, 180, "training to start")
    pid = wait_until(lambda: rank_pid(job, 1), 10, "the pid of rank 1")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    info = wait_for_end(env, job, log, timeout=120)
    assert time.monotonic() - killed_at < 120
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", info
    text = log.read_text()
    assert re.search(r"srun: error: n2: task 1: Killed", text), tail(log)
    assert "training failed: srun exited" in text, tail(log)


def test_preemption_warning_checkpoints_requeues_and_resumes_the_same_curve(straight, slurm_cluster, random_data,
                                                                           tmp_path):
    env, run_dir, log = slurm_cluster, tmp_path / "run", tmp_path / "job.log"
    job = submit(env, log, run_dir, _overrides(random_data))
    wait_until(lambda: logged_steps(run_dir) >= 3, 180, "training to start")
    sh(env, "scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@300 does before the time limit
    wait_until(lambda: job_info(env, job)["Restarts"] == "1", 60, f"job {job} to requeue itself")
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().removeprefix("step"))
    assert 3 <= stopped_at < STEPS, stopped_at
    # Slurm holds a requeued job for 2 minutes; shorten that, but not to zero: a relaunch in the second of
    # the requeue is refused ("Job credential revoked") and ends the job
    wait_until(lambda: job_info(env, job)["JobState"] == "PENDING", 60, f"job {job} to be pending again")
    sh(env, "scontrol", "update", f"JobId={job}", "StartTime=now+5")
    info = wait_for_end(env, job, log)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), tail(log)
    text = log.read_text()
    for expected in ("got SIGUSR1: asking the ranks to checkpoint", "stop requested (SIGUSR1)",
                     f"requeueing job {job}", "attempt 2", f"resumed from {run_dir}/checkpoints/step{stopped_at:06d}"):
        assert expected in text, f"{expected!r} not in the log:\n{tail(log)}"
    assert losses(run_dir) == losses(straight[0])


def test_sigterm_to_the_ranks_checkpoints_and_a_resubmission_resumes_the_same_curve(straight, slurm_cluster,
                                                                                    random_data, tmp_path):
    env, run_dir, log = slurm_cluster, tmp_path / "run", tmp_path / "job.log"
    job = submit(env, log, run_dir, _overrides(random_data))
    wait_until(lambda: logged_steps(run_dir) >= 3, 180, "training to start")
    sh(env, "scancel", "--signal=TERM", job)  # every rank gets SIGTERM, as from an admin or a node shutdown
    info = wait_for_end(env, job, log)
    assert info["JobState"] == "COMPLETED", tail(log)  # the ranks checkpointed and exited cleanly
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().removeprefix("step"))
    assert 3 <= stopped_at < STEPS and "stop requested (SIGTERM)" in log.read_text(), tail(log)

    log2 = tmp_path / "resubmitted.log"
    info = wait_for_end(env, submit(env, log2, run_dir, _overrides(random_data)), log2)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), tail(log2)
    assert f"resumed from {run_dir}/checkpoints/step{stopped_at:06d}" in log2.read_text(), tail(log2)
    assert losses(run_dir) == losses(straight[0])
