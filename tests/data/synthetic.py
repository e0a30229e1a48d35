"""Synthetic WebDataset splits of random codes, written with webdataset.TarWriter (not our builder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import webdataset as wds

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.demo import demo_sentences
from higgs_ds.data.schema import Utterance
from higgs_ds.data.shards import (
    INDEX_NAME,
    SHARD_NAME,
    iter_tar_samples,
    list_shards,
    utterance_to_tar_sample,
    write_shard,
)

K = 8
# The codes are random: a spec of their shape, from no real codec.
SPEC = AudioSpec(codec="synthetic", sample_rate=16000, frame_rate=25.0, num_codebooks=K, codebook_size=1024)


def random_utterance(rng: np.random.Generator, i: int, with_ref: bool, spec: AudioSpec = SPEC) -> Utterance:
    sentences = demo_sentences()
    frames = int(rng.integers(10, 60))
    shape = lambda n: (spec.num_codebooks, n)  # noqa: E731
    ref = rng.integers(0, spec.codebook_size, shape(int(rng.integers(5, 30)))) if with_ref else None
    return Utterance(id=f"s{i:05d}", text=sentences[i % len(sentences)],
                     codes=rng.integers(0, spec.codebook_size, shape(frames)),
                     speaker=f"spk{i % 3}", ref_text=sentences[(i + 1) % len(sentences)] if with_ref else None,
                     ref_codes=ref)


def write_synthetic_split(folder: Path, num_shards: int, per_shard: int, seed: int = 0,
                          spec: AudioSpec = SPEC) -> list[list[str]]:
    """Shards written directly with webdataset.TarWriter (not the builder) + a minimal index, holding random
    codes of `spec`'s shape (a real codec's spec makes them decodable, as noise). Returns each shard's ids."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids, shards = [], []
    for s in range(num_shards):
        utts = [random_utterance(rng, s * per_shard + j, with_ref=j % 2 == 0, spec=spec) for j in range(per_shard)]
        with wds.TarWriter(str(folder / SHARD_NAME.format(s))) as sink:
            for u in utts:
                sink.write(utterance_to_tar_sample(u.id, u))
        ids.append([u.id for u in utts])
        shards.append({"name": SHARD_NAME.format(s), "samples": per_shard, "frames": sum(u.frames for u in utts),
                       "bytes": 0, "speakers": {}})
    index = {"version": 2, "num_samples": num_shards * per_shard, "audio_spec": spec.to_dict(), "shards": shards}
    (folder / INDEX_NAME).write_text(json.dumps(index))
    return ids


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
