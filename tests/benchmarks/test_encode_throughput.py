"""Shard-build throughput in hours of audio encoded per hour of wall time, with 1 and 2 CPU workers.

The shipped demo codec (a small DAC, 16 kHz, 25 frames/s) encodes 240 clips of 2-6 s (about 16 minutes of
audio) through `build_shards`, the code path of `prepare_data build`, process start-up and codec loading
included. Prints both rates and their ratio; docs/data.md ("Encoding on many GPUs and nodes") projects
them. Runs only with `pytest --benchmark`.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile

from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo import shipped_demo_codec

pytestmark = pytest.mark.benchmark

CLIPS, RATE = 240, 16000


def _corpus(folder) -> tuple[str, float]:
    """A manifest of noise-modulated tones and its total duration in seconds."""
    folder.mkdir()
    rng, rows, seconds = np.random.default_rng(0), [], 0.0
    for i in range(CLIPS):
        length = float(rng.uniform(2.0, 6.0))
        t = np.arange(int(length * RATE)) / RATE
        wave = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(t.size)
        soundfile.write(folder / f"{i}.wav", wave.astype(np.float32), RATE)
        rows.append({"id": f"clip{i}", "text": "جملة للقياس", "audio": f"{i}.wav"})
        seconds += t.size / RATE
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(folder / "manifest.jsonl"), seconds


def test_encode_hours_per_hour_with_one_and_two_workers(benchmark, tmp_path):
    manifest, audio_seconds = _corpus(tmp_path / "corpus")
    codec = CodecConfig(path=str(shipped_demo_codec()), device="cpu")
    rates, runs = {}, iter(range(10**6))

    def build(workers: int) -> float:
        out = tmp_path / f"out{workers}-{next(runs)}"
        start = time.perf_counter()
        index = build_shards(BuildConfig(manifest=manifest, out_dir=str(out), codec=codec, num_workers=workers,
                                         max_samples_per_shard=10, progress=False))
        elapsed = time.perf_counter() - start
        assert index["num_samples"] == CLIPS
        return audio_seconds / elapsed  # hours of audio per hour

    def run():
        for workers in (1, 2):
            rates.setdefault(workers, []).append(build(workers))

    benchmark.pedantic(run, rounds=2, iterations=1)
    best = {workers: max(values) for workers, values in rates.items()}
    ratio = best[2] / best[1]
    print(f"\nencode ({audio_seconds / 60:.1f} min of audio, demo codec, CPU): "
          f"1 worker {best[1]:.1f} h/h, 2 workers {best[2]:.1f} h/h, scaling {ratio:.2f}x")
    benchmark.extra_info.update(hours_per_hour_1=best[1], hours_per_hour_2=best[2], scaling=ratio)
