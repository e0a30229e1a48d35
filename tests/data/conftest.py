"""Shared fixtures for the data tests: a tiny demo tokenizer and synthetic shards (random codes)."""

from __future__ import annotations

import pytest

from higgs_ds.data.demo import demo_sentences
from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
from tests.data.synthetic import K, random_utterance, write_synthetic_split  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return train_demo_tokenizer(demo_sentences()[:60], tmp_path_factory.mktemp("tok"), vocab_size=800)


@pytest.fixture
def synthetic_split(tmp_path):
    folder = tmp_path / "train"
    ids = write_synthetic_split(folder, num_shards=8, per_shard=12)
    return folder, ids


@pytest.fixture
def make_split():
    """The synthetic shard writer, for tests that need a custom layout."""
    return write_synthetic_split
