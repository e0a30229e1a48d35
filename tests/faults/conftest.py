"""Fault tests share the training tests' random-code splits and tokenizer, and one uninterrupted run."""

from pathlib import Path

import pytest

from tests.faults.cli import RESUME_STEPS, output, train
from tests.train.conftest import random_data  # noqa: F401  (a fixture, re-exported for tests/faults)


@pytest.fixture(scope="session")
def straight(tmp_path_factory, random_data) -> Path:  # noqa: F811 (the fixture above)
    """An uninterrupted 2-rank run: its per-step losses are what every resumed run must match."""
    run = tmp_path_factory.mktemp("straight")
    proc = train(run, random_data, *RESUME_STEPS)
    assert proc.returncode == 0, output(proc)
    return run
