"""Submit launch/slurm/train.sbatch to the local cluster and watch the job, for the Slurm tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import REPO

CLUSTER_SCRIPT = REPO / "launch" / "slurm" / "local_cluster.sh"
SUBMIT = REPO / "launch" / "slurm" / "submit.sh"
ENABLE = f"sudo bash {CLUSTER_SCRIPT.relative_to(REPO)} up"  # installs (apt) and starts the local cluster


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def why_not_startable() -> str | None:
    """Why the tests cannot start the cluster on this machine (None when they can try): starting it needs root,
    and installing Slurm needs apt-get."""
    if os.geteuid() != 0:
        return "starting the local Slurm cluster needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and apt-get is missing"
    return None


def skip_or_fail_if_not_startable() -> None:
    """Outside CI, skip naming the command that starts the cluster; under CI=true, where the Slurm tests
    must run, fail with the reason instead."""
    reason = why_not_startable()
    if reason is None:
        return
    message = f"{reason}; start it once with `{ENABLE}` and rerun"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def slurm_env() -> dict[str, str]:
    conf = subprocess.run(["bash", str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True, check=True)
    return {**os.environ, "SLURM_CONF": conf.stdout.strip().split("=", 1)[1]}


def sh(env: dict, *cmd: str) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def submit(env: dict, log: Path, run_dir: Path, overrides: list[str], **job_env: str) -> str:
    """Two emulated nodes x one CPU rank each; returns the job id."""
    env = {**env, "NODES": "2", "GPUS_PER_NODE": "0", "RANKS_PER_NODE": "1", "RUN_DIR": str(run_dir),
           "SBATCH_ARGS": f"--output={log} --time=15", "WANDB_MODE": "disabled", **job_env}
    return sh(env, "bash", str(SUBMIT), *overrides).strip()


def job_info(env: dict, job: str) -> dict[str, str]:
    out = sh(env, "scontrol", "show", "job", job)
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_until(pred, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_end(env: dict, job: str, log: Path, timeout: float = 240) -> dict[str, str]:
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    try:
        return wait_until(lambda: (i := job_info(env, job))["JobState"] in ended and i, timeout, f"job {job} to end")
    except AssertionError:
        subprocess.run(["scancel", job], env=env)
        raise AssertionError(f"job {job} did not end in {timeout} s; log:\n{tail(log)}") from None


def tail(log: Path, n: int = 8000) -> str:
    return log.read_text()[-n:] if log.exists() else "(no log)"


def logged_steps(run_dir: Path) -> int:
    f = run_dir / "metrics.jsonl"
    return sum(1 for line in f.read_text().splitlines() if line.strip()) if f.exists() else 0


def rank_pid(job: str, rank: int) -> int | None:
    """The pid of training rank `rank` of `job` (srun launch), found through /proc; not its data workers."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
            cmdline = (proc / "cmdline").read_text()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if env.get("SLURM_JOB_ID") == job and env.get("SLURM_PROCID") == str(rank) and "launch/train.py" in cmdline:
            found[int(proc.name)] = ppid
    mains = [pid for pid, ppid in found.items() if ppid not in found]
    return mains[0] if len(mains) == 1 else None
