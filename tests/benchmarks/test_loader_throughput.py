"""Loader throughput per worker, in audio frames/s, against what one H100 consumes.

One H100 on the 5.8B model at 40% MFU trains on about 11.5k positions/s; nearly every position is an
audio frame, so one worker should supply at least 3x that in frames. Runs only with `pytest --benchmark`.
"""

from __future__ import annotations

import json
import time
from itertools import islice

import numpy as np
import pytest
import webdataset as wds

from higgs_ds.data.demo import demo_sentences
from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
from higgs_ds.data.loader import LoaderConfig, build_loader
from higgs_ds.data.schema import Utterance
from higgs_ds.data.shards import INDEX_NAME, SHARD_NAME, utterance_to_tar_sample
from higgs_ds.data.stream import StreamConfig
from higgs_ds.models.higgs_v2.prompt import ChatMLRenderer
from tests.data.synthetic import SPEC

MAKE_RENDERER = ChatMLRenderer  # the demo tokenizer's family renders these batches

pytestmark = pytest.mark.benchmark

H100_POSITIONS_PER_S = 11_500
TARGET_RATIO = 3.0


def _write_realistic_split(folder, num_shards=4, per_shard=200):
    """Utterances of 3-15 s at 25 frames/s, half with a 3-8 s voice-cloning reference."""
    rng, sentences, shards = np.random.default_rng(0), demo_sentences(), []
    folder.mkdir(parents=True)
    for s in range(num_shards):
        with wds.TarWriter(str(folder / SHARD_NAME.format(s))) as sink:
            for j in range(per_shard):
                i = s * per_shard + j
                ref = rng.integers(0, 1024, (8, int(rng.integers(75, 200)))) if i % 2 else None
                utt = Utterance(id=f"u{i}", text=" ".join(sentences[i % 200: i % 200 + 3]),
                                codes=rng.integers(0, 1024, (8, int(rng.integers(75, 375)))),
                                ref_text=sentences[(i + 7) % 200] if i % 2 else None, ref_codes=ref)
                sink.write(utterance_to_tar_sample(utt.id, utt))
        shards.append({"name": SHARD_NAME.format(s), "samples": per_shard})
    (folder / INDEX_NAME).write_text(json.dumps({"audio_spec": SPEC.to_dict(), "shards": shards}))


def test_loader_frames_per_second_per_worker(benchmark, tmp_path):
    _write_realistic_split(tmp_path / "train")
    tokenizer = train_demo_tokenizer(demo_sentences(), tmp_path / "tok")
    cfg = LoaderConfig(shards=str(tmp_path / "train"), num_workers=0,  # in-process = exactly one worker
                     stream=StreamConfig(max_tokens=16384, max_seq_len=1024, shuffle_buffer=256, bucket_pool=512))
    results = {}

    def run():
        loader = build_loader(cfg, tokenizer, MAKE_RENDERER)
        start = time.perf_counter()
        for _ in islice(loader, 150):
            pass
        results["frames_per_s"] = loader.metrics()["audio_frames"] / (time.perf_counter() - start)

    benchmark.pedantic(run, rounds=3, iterations=1)
    ratio = results["frames_per_s"] / H100_POSITIONS_PER_S
    print(f"\nloader: {results['frames_per_s']:,.0f} audio frames/s per worker = {ratio:.1f}x one H100 "
          f"({H100_POSITIONS_PER_S:,} positions/s); target >= {TARGET_RATIO}x")
    benchmark.extra_info.update(frames_per_s=results["frames_per_s"], ratio_vs_h100=ratio)
    assert ratio >= TARGET_RATIO
