"""A real two-node Slurm cluster on this machine (launch/slurm/local_cluster.sh), started once per
session and stopped afterwards."""

from __future__ import annotations

import subprocess

import pytest

from tests.slurm.cluster import CLUSTER_SCRIPT, skip_or_fail_if_not_startable, slurm_env


def _cluster(cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Outside CI, skips when the cluster is down and cannot be started here, naming the command that
    starts it; under CI (CI=true) fails instead, with the reason: there the Slurm tests must run."""
    already_up = _cluster("status").returncode == 0
    if not already_up:
        skip_or_fail_if_not_startable()
        up = _cluster("up")
        if up.returncode != 0:
            pytest.fail(f"could not install/start the local Slurm cluster ({CLUSTER_SCRIPT} up exited "
                        f"{up.returncode}):\n{up.stdout}\n{up.stderr}", pytrace=False)
    yield slurm_env()
    if not already_up:  # leave a cluster someone else started alone; stop ours so CI leaves nothing running
        _cluster("down")
