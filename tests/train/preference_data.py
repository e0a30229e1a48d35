"""Pair shards for the DPO runs: the synthetic random-code split with a rejected sample per utterance."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import webdataset as wds

from higgs_ds.data.shards import INDEX_NAME, SHARD_NAME, utterance_to_tar_sample
from tests.data.synthetic import SPEC, random_utterance


def write_pair_split(folder: Path, num_shards: int = 2, per_shard: int = 12, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards = []
    for s in range(num_shards):
        utts = [random_utterance(rng, s * per_shard + j, with_ref=j % 2 == 0) for j in range(per_shard)]
        utts = [replace(u, rejected_codes=rng.integers(0, SPEC.codebook_size, (SPEC.num_codebooks,
                                                                               int(rng.integers(5, 40)))))
                for u in utts]
        with wds.TarWriter(str(folder / SHARD_NAME.format(s))) as sink:
            for u in utts:
                sink.write(utterance_to_tar_sample(u.id, u))
        shards.append({"name": SHARD_NAME.format(s), "samples": per_shard, "frames": sum(u.frames for u in utts),
                       "bytes": 0, "speakers": {}})
    index = {"version": 2, "num_samples": num_shards * per_shard, "audio_spec": SPEC.to_dict(), "shards": shards}
    (folder / INDEX_NAME).write_text(json.dumps(index))
    return folder


if __name__ == "__main__":
    import sys

    write_pair_split(Path(sys.argv[1]))
