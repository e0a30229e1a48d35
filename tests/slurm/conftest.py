"""A real two-node Slurm cluster on this machine (launch/slurm/local_cluster.sh), started once per
session and stopped afterwards; the small random-code data splits of the training tests."""

from __future__ import annotations

import subprocess

import pytest

from tests.slurm.cluster import CLUSTER_SCRIPT, slurm_env
from tests.train.conftest import random_data  # noqa: F401  (the shared data fixture)


def _cluster(cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Fails (never skips) when Slurm cannot be installed or started: the reason is in the message."""
    already_up = _cluster("status").returncode == 0
    up = _cluster("up")
    if up.returncode != 0:
        pytest.fail(f"could not install/start the local Slurm cluster ({CLUSTER_SCRIPT} up exited "
                    f"{up.returncode}):\n{up.stdout}\n{up.stderr}", pytrace=False)
    yield slurm_env()
    if not already_up:  # leave a cluster someone else started alone; stop ours so CI leaves nothing running
        _cluster("down")
