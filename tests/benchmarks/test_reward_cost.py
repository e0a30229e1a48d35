"""Milliseconds per sample of each built-in reward on this machine's CPU (one thread), and of decoding the codes
that the audio rewards read, for 3-second espeak-ng clips with a voice reference: the figures of
docs/rewards.md ("Cost"). `cer` runs a tiny random Whisper (the plumbing's cost, not a real model's: a
real Whisper folder costs what its size costs). Runs only with `pytest --benchmark`."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch

from higgs_ds.codec import CodecConfig, load_audio, load_codec
from higgs_ds.data.demo import DEMO_SPEAKERS, demo_sentences, shipped_demo_codec, synthesize
from higgs_ds.rewards import build_rewards, make_samples
from tests.prep.tiny_whisper import save_tiny_whisper

pytestmark = [pytest.mark.benchmark,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")]
CLIPS = 8


def test_seconds_per_sample_of_each_reward(benchmark, tmp_path):
    torch.set_num_threads(1)
    codec = load_codec(CodecConfig(path=str(shipped_demo_codec()), device="cpu"))
    sentences = demo_sentences()
    codes, texts = [], []
    for i in range(CLIPS):
        synthesize(sentences[i], DEMO_SPEAKERS[i % len(DEMO_SPEAKERS)], tmp_path / f"{i}.wav")
        wav, sr = load_audio(tmp_path / f"{i}.wav")
        wav = wav[: 3 * sr]  # 3 s each
        codes.append(codec.encode([wav], sr)[0])
        texts.append(sentences[i])
    reference = codes[0].numpy()
    context = {"whisper": str(save_tiny_whisper(tmp_path / "whisper")), "whisper_max_new_tokens": 40,
               "chars_per_second": 12.0}
    rows = {}

    def run():
        start = time.perf_counter()
        samples = make_samples(codes, texts, [True] * CLIPS, spec=codec.spec, codec=codec, needs_audio=True,
                               reference_codes=[reference] * CLIPS)
        rows["decode (codec)"] = (time.perf_counter() - start) / CLIPS
        for name in ("duration", "stop", "sim", "dnsmos", "cer"):
            rewards = build_rewards({name: 1.0}, context)
            rewards.score(samples[:1])  # warm-up: first-call initialisation is not a per-sample cost
            start = time.perf_counter()
            rewards.score(samples)
            rows[name] = (time.perf_counter() - start) / CLIPS

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(f"\nmilliseconds per 3 s sample, {CLIPS} samples, 1 CPU thread:")
    for name, seconds in rows.items():
        print(f"  {name:<16}{seconds * 1e3:>10.3f}")
    assert all(np.isfinite(list(rows.values())))
