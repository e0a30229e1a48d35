"""Fixtures for the training integration tests: a tokenizer and small shard splits on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from higgs_ds.data.demo import DemoConfig, build_demo, demo_sentences
from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
from higgs_ds.data.shards import INDEX_NAME, SHARD_NAME, iter_tar_samples, list_shards, write_shard
from tests.data.synthetic import write_synthetic_split


@pytest.fixture(scope="session")
def random_data(tmp_path_factory) -> dict[str, Path]:
    """Random-code train/eval splits and a tokenizer: nothing in them is predictable but structure."""
    root = tmp_path_factory.mktemp("random_data")
    write_synthetic_split(root / "train", num_shards=8, per_shard=24, seed=0)
    write_synthetic_split(root / "eval", num_shards=2, per_shard=6, seed=1)
    train_demo_tokenizer(demo_sentences(), root / "tokenizer", vocab_size=800)
    return {"train": root / "train", "eval": root / "eval", "tokenizer": root / "tokenizer"}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    """The real built-in demo (espeak-ng Arabic, the shipped demo codec), built once per session."""
    root = tmp_path_factory.mktemp("demo")
    build_demo(DemoConfig(out_dir=str(root), progress=False))
    return {"train": root / "train", "eval": root / "eval", "tokenizer": root / "tokenizer"}


def take_samples(src: Path, dst: Path, n: int, copies: int = 1) -> Path:
    """A split holding the first n samples of `src` (each repeated `copies` times), for overfitting."""
    samples = []
    for shard in list_shards(src):
        samples += list(iter_tar_samples(shard))
        if len(samples) >= n:
            break
    chosen = samples[:n]
    dst.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in s.items() if not k.startswith("__")} | {"__key__": f"{s['__key__']}_{c}"}
            for c in range(copies) for s in chosen]
    write_shard(dst / SHARD_NAME.format(0), rows)
    index = json.loads((src / INDEX_NAME).read_text())
    index.update(num_samples=len(rows), shards=[{"name": SHARD_NAME.format(0), "samples": len(rows)}])
    (dst / INDEX_NAME).write_text(json.dumps(index))
    return dst
