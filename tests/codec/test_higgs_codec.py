"""The `higgs` codec backend against transformers' HiggsAudioV2TokenizerModel itself, and its guards."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from transformers import DacFeatureExtractor, HiggsAudioV2TokenizerModel

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER
from higgs_ds.codec import CodecConfig, CodecLoadError, detect_codec_kind, load_codec
from higgs_ds.codec.boson_tokenizer import save_boson_tokenizer
from higgs_ds.data.shards import iter_tar_samples, list_shards, load_spec, tar_sample_to_utterance
from tests.codec.tiny_tokenizer import (
    build_tiny_higgs_tokenizer,
    save_tiny_higgs_tokenizer,
    tiny_higgs_tokenizer_config,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return save_tiny_higgs_tokenizer(tmp_path_factory.mktemp("higgs_tokenizer"), seed=0)


def _wave(seconds: float, rate: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * math.pi * (150 + 100 * seed) * t) + 0.05 * torch.randn(t.shape, generator=g)).float()


def _reference_codes(directory: Path, wave: torch.Tensor, rate: int) -> torch.Tensor:
    """What a user of transformers gets: resample to 24 kHz, the feature extractor, model.encode."""
    model = HiggsAudioV2TokenizerModel.from_pretrained(str(directory)).eval()
    features = DacFeatureExtractor.from_pretrained(str(directory))
    audio = torchaudio.functional.resample(wave, rate, 24000)
    inputs = features(raw_audio=audio.numpy(), sampling_rate=24000, return_tensors="pt")
    with torch.no_grad():
        codes = model.encode(inputs["input_values"], return_dict=False)[0]
    return codes[:, : math.ceil(audio.numel() / 960)]


def test_codes_and_audio_equal_the_transformers_model(tokenizer_dir):
    codec = load_codec(CodecConfig(path=str(tokenizer_dir)))  # kind detected from the folder
    spec = codec.spec
    assert detect_codec_kind(tokenizer_dir) == "higgs" and not spec.differences(HIGGS_AUDIO_TOKENIZER)
    assert spec.codec_sha256 and spec.codec_path == str(tokenizer_dir.resolve())
    waves = [_wave(1.3, 16000, 1), _wave(0.7, 16000, 2)]  # different lengths: encoded without cross-padding
    codes = codec.encode(waves, 16000)
    for wave, got in zip(waves, codes, strict=True):
        want = _reference_codes(tokenizer_dir, wave, 16000)
        assert got.shape == (8, math.ceil(wave.numel() * 1.5 / 960)) and torch.equal(got, want)
        assert len(set(got.flatten().tolist())) > 8  # random codebooks: the codes really vary
    model = HiggsAudioV2TokenizerModel.from_pretrained(str(tokenizer_dir)).eval()
    with torch.no_grad():
        want_audio = model.decode(codes[0][None], return_dict=False)[0, 0]
    audio = codec.decode(codes[0])
    assert audio.shape == (codes[0].shape[1] * 960,) and torch.equal(audio, want_audio)


def test_boson_folder_loads_through_the_converter_with_the_same_codes(tokenizer_dir, tmp_path):
    boson = save_boson_tokenizer(build_tiny_higgs_tokenizer(seed=0), tmp_path / "boson")
    assert detect_codec_kind(boson) == "higgs"
    wave = _wave(1.0, 24000, 3)
    ours = load_codec(CodecConfig(path=str(boson), kind="auto")).encode([wave], 24000)[0]
    assert torch.equal(ours, load_codec(CodecConfig(path=str(tokenizer_dir))).encode([wave], 24000)[0])


def test_a_tokenizer_that_is_not_the_released_layout_is_refused(tmp_path):
    cfg = tiny_higgs_tokenizer_config()
    cfg.acoustic_model_config.downsampling_ratios = [8, 5, 4, 2]  # the class default: hop 320, 75 frames/s
    cfg.acoustic_model_config.upsampling_ratios = [8, 5, 4, 2]
    HiggsAudioV2TokenizerModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(CodecLoadError, match=r"not the Higgs Audio v2 tokenizer.*frames/s 75 \(expected 25\)"):
        load_codec(CodecConfig(path=str(tmp_path)))
    with pytest.raises(CodecLoadError, match="cannot tell which codec"):
        detect_codec_kind(tmp_path.parent)


@pytest.mark.integration
def test_prepare_data_build_with_the_higgs_codec_stores_its_codes_and_spec(tokenizer_dir, tmp_path):
    rows, waves = [], {}
    for i in range(3):
        wave = _wave(0.5 + 0.3 * i, 22050, i)
        soundfile.write(tmp_path / f"u{i}.wav", wave.numpy(), 22050)
        waves[f"u{i}"] = wave
        rows.append({"id": f"u{i}", "text": f"جملة رقم {i}", "audio": f"u{i}.wav"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    res = subprocess.run([sys.executable, "launch/prepare_data.py", "build", "--manifest", str(tmp_path / "m.jsonl"),
                          "--out", str(tmp_path / "shards"), "--codec", "higgs", "--codec-path", str(tokenizer_dir)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    spec = load_spec(tmp_path / "shards")
    assert spec == load_codec(CodecConfig(path=str(tokenizer_dir))).spec
    for shard in list_shards(tmp_path / "shards"):
        for sample in iter_tar_samples(shard):
            utt = tar_sample_to_utterance(sample, spec)
            sound = soundfile.read(tmp_path / f"{utt.id}.wav", dtype="float32")[0]
            want = _reference_codes(tokenizer_dir, torch.from_numpy(np.asarray(sound)), 22050)
            assert np.array_equal(utt.codes, want.numpy())
