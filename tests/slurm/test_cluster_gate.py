"""Without root the local cluster cannot start: outside CI the Slurm tests skip naming the command that
starts it; under CI=true they fail instead (they must never be skipped there)."""

import pytest

from tests.slurm import cluster


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)


def test_outside_ci_a_session_without_root_skips_naming_the_command(not_root, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs root; start it once with `sudo bash "
                                                     r"launch/slurm/local_cluster.sh up`"):
        cluster.skip_or_fail_if_not_startable()


@pytest.mark.parametrize("value", ["true", "1"])
def test_under_ci_it_fails_instead(not_root, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true and starting the local Slurm cluster needs root"):
        cluster.skip_or_fail_if_not_startable()


def test_root_with_slurm_or_apt_get_may_start_it(monkeypatch):
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cluster.shutil, "which", lambda name: "/usr/bin/" + name)
    cluster.skip_or_fail_if_not_startable()  # returns: the fixture goes on to start the cluster
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="Slurm is not installed and apt-get is missing"):
        monkeypatch.delenv("CI", raising=False)
        cluster.skip_or_fail_if_not_startable()
