"""Fixtures for the data tests: synthetic shards (random codes); the tokenizer is in tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.data.synthetic import write_synthetic_split


@pytest.fixture
def synthetic_split(tmp_path):
    folder = tmp_path / "train"
    ids = write_synthetic_split(folder, num_shards=8, per_shard=12)
    return folder, ids


@pytest.fixture
def make_split():
    """The synthetic shard writer, for tests that need a custom layout."""
    return write_synthetic_split
