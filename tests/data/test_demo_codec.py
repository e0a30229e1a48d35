"""The shipped demo codec (trained by scripts/train_demo_codec.py): it loads only with its checksum, and it
reconstructs held-out espeak-ng speech within a fixed bar.

Held out: the sentences below are not in the demo corpus, so the codec never trained on them. The bar
comes from the shipped weights on 12 held-out clips (demo eval-split sentences, the 6 demo voices):
MCD mean 3.16 dB (max 3.47), resemblyzer similarity of decode(encode(x)) to x mean 0.80 (min 0.67)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from higgs_ds.codec import CodecConfig, load_audio, load_codec
from higgs_ds.data.demo import DEMO_SPEAKERS, demo_sentences, shipped_demo_codec, synthesize
from higgs_ds.quality.models import ResemblyzerEmbedder
from higgs_ds.quality.scorer import cosine_similarity
from higgs_ds.quality.signal import mel_cepstral_distortion, resample

HELD_OUT = ("تشرق الشمس على الجبال البعيدة كل صباح", "يحب أخي قراءة الكتب القديمة في المساء")
MAX_MCD_DB = 4.0
MIN_SPEAKER_SIM = 0.6


def test_shipped_codec_is_checked_against_its_checksum(tmp_path):
    path = shipped_demo_codec()
    digest = path.with_name(path.name + ".sha256").read_text().split()[0]
    settings = json.loads(path.with_suffix(".json").read_text())
    assert settings["sha256"] == digest and settings["config"]["model"]["n_codebooks"] == 8
    bad = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    shutil.copy(path.with_name(path.name + ".sha256"), tmp_path)
    with pytest.raises(ValueError, match="checksum"):
        shipped_demo_codec(bad)
    assert not any(s in demo_sentences() for s in HELD_OUT)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_shipped_codec_reconstructs_held_out_speech(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below: 2 threads on a shared 2-core machine are much slower
    codec = load_codec(CodecConfig(path=str(shipped_demo_codec()), kind="dac", device="cpu"))
    spec = codec.spec
    assert (spec.sample_rate, spec.frame_rate, spec.num_codebooks, spec.codebook_size) == (16000, 25.0, 8, 1024)
    embed = ResemblyzerEmbedder()
    try:
        for text, speaker in zip(HELD_OUT, (DEMO_SPEAKERS[0], DEMO_SPEAKERS[3]), strict=True):
            synthesize(text, speaker, tmp_path / f"{speaker.name}.wav")
            wav, sr = load_audio(tmp_path / f"{speaker.name}.wav")
            x = resample(wav.numpy(), sr, 16000)
            codes = codec.encode([torch.from_numpy(x)], 16000)[0]
            assert codes.shape == (8, -(-len(x) // 640))
            y = codec.decode(codes).numpy()
            assert len(y) == codes.shape[1] * 640 and np.isfinite(y).all()
            mcd = mel_cepstral_distortion(y[: len(x)], 16000, x, 16000)
            sim = cosine_similarity(embed(y, 16000), embed(x, 16000))
            assert mcd < MAX_MCD_DB and sim > MIN_SPEAKER_SIM, (speaker.name, mcd, sim)
    finally:
        torch.set_num_threads(threads)
