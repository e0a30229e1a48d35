"""The built-in rewards against hand-computed values (duration, stop, the weighted sum), the real models on
espeak-ng clips (resemblyzer's encoder for `sim`, speechmos for `dnsmos`), `cer` end to end on a tiny random
Whisper folder, the fitted speaking rate, codes -> samples with the demo codec, and the file-only checks."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import webdataset as wds

from higgs_ds.codec import CodecConfig, load_audio, load_codec
from higgs_ds.data.demo import DEMO_SPEAKERS, build_seeded_demo_dac, synthesize
from higgs_ds.data.schema import Utterance
from higgs_ds.data.shards import INDEX_NAME, SHARD_NAME, utterance_to_tar_sample
from higgs_ds.errors import ConfigError, UserError
from higgs_ds.quality.models import WhisperTranscriber
from higgs_ds.quality.scorer import error_counts
from higgs_ds.quality.signal import resample
from higgs_ds.rewards import (
    RewardSample,
    build_rewards,
    check_rewards,
    fit_chars_per_second,
    make_samples,
    read_chars_per_second,
    save_chars_per_second,
)
from higgs_ds.rewards.speech import dnsmos_to_unit, text_chars
from tests.data.synthetic import SPEC
from tests.prep.tiny_whisper import save_tiny_whisper

TEXT = "ذهب الولد"  # normalised: ذهب + الولد = 8 characters
RATE = 16000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample(frames: int, text: str = TEXT, finished: bool = True, audio=None, reference=None) -> RewardSample:
    return RewardSample(codes=torch.zeros(frames, 8, dtype=torch.long), text=text, sample_rate=RATE, audio=audio,
                        reference_audio=reference, finished=finished, meta={"frame_rate": 25.0})


def test_duration_and_stop_against_hand_values():
    assert text_chars(TEXT) == 8 and text_chars("ذَهَبَ، الوَلَدُ!") == 8  # diacritics and punctuation do not count
    rewards = build_rewards({"duration": 1.0, "stop": 3.0}, {"chars_per_second": 4.0})  # 8 chars -> 2 s = 50 frames
    samples = [sample(50), sample(25), sample(100), sample(40, finished=False), sample(0, finished=False)]
    result = rewards.score(samples)
    assert result.components["duration"].tolist() == [1.0, 0.5, 0.5, 0.8, 0.0]
    assert result.components["stop"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert result.total.tolist() == pytest.approx([1.0, 3.5 / 4, 3.5 / 4, 0.2, 0.0])
    assert result.left_out == {"duration": 0, "stop": 0} and not rewards.needs_audio
    with pytest.raises(ConfigError, match="chars_per_second"):
        build_rewards({"duration": 1.0}, {})


def wrong_length(samples):
    return [0.5] * (len(samples) + 1)


def test_a_reward_returning_the_wrong_length_is_named():
    rewards = build_rewards({"stop": 1.0, f"{__name__}:wrong_length": 1.0})
    with pytest.raises(UserError, match="wrong_length' returned 3 values for 2 samples"):
        rewards.score([sample(5), sample(6)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """16 kHz: a clip, the same sentence in another demo voice, and white noise as long as the clip."""
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name, speaker in (("clip", DEMO_SPEAKERS[1]), ("other_voice", DEMO_SPEAKERS[3])):
        synthesize("ذهب الولد إلى المدرسة في الصباح", speaker, folder / f"{name}.wav")
        wav, sr = load_audio(folder / f"{name}.wav")
        out[name] = resample(wav.numpy(), sr, RATE)
    out["noise"] = (np.random.default_rng(0).standard_normal(len(out["clip"])) * 0.1).astype(np.float32)
    return out


@needs_espeak
def test_sim_with_resemblyzer_left_out_without_a_reference(clips):
    rewards = build_rewards({"sim": 1.0, "duration": 1.0}, {"chars_per_second": 4.0})  # TEXT: 2 s = 50 frames
    clip, other = clips["clip"], clips["other_voice"]
    samples = [sample(50, audio=clip, reference=clip), sample(25, audio=other, reference=clip),
               sample(100, audio=clip),  # zero-shot: sim left out
               sample(0, audio=np.zeros(0, np.float32), reference=clip)]  # nothing generated
    result = rewards.score(samples)
    sim = result.components["sim"]
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and 0 < sim[1] < 0.9 and math.isnan(sim[2]) and sim[3] == 0
    assert result.left_out == {"sim": 1, "duration": 0}
    assert result.total[2] == 0.5  # the zero-shot sample: duration alone, its weight renormalised to 1
    assert result.total.tolist() == pytest.approx([1.0, (sim[1] + 0.5) / 2, 0.5, 0.0])


@needs_espeak
def test_dnsmos_maps_speechmos_overall_score_to_the_unit_interval(clips):
    rewards = build_rewards({"dnsmos": 1.0})
    dnsmos = rewards.score([sample(10, audio=clips["clip"]), sample(10, audio=clips["noise"]),
                            sample(0, audio=np.zeros(0, np.float32))]).components["dnsmos"]
    model = rewards.rewards[0].fn.model  # speechmos' DNSMOS, already warm
    assert dnsmos[1] == pytest.approx(dnsmos_to_unit(model(clips["noise"], RATE)["dnsmos_ovrl"]), abs=1e-6)
    assert 0 <= dnsmos[1] < dnsmos[0] <= 1 and dnsmos[2] == 0
    assert [dnsmos_to_unit(x) for x in (0.5, 1.0, 3.0, 5.0, 5.5)] == [0.0, 0.0, 0.5, 1.0, 1.0]


@needs_espeak
def test_cer_scores_the_local_whisper_transcript(clips, tmp_path):
    folder = save_tiny_whisper(tmp_path / "whisper")
    rewards = build_rewards({"cer": 1.0}, {"whisper": str(folder), "whisper_max_new_tokens": 40})
    text = "ذهب الولد إلى المدرسة في الصباح"
    result = rewards.score([sample(10, text=text, audio=clips["clip"]),
                            sample(0, text=text, audio=np.zeros(0, np.float32))])
    transcript = WhisperTranscriber(folder, max_new_tokens=40)(clips["clip"], RATE)  # a random model: noise
    counts = error_counts(text, transcript)
    assert result.components["cer"].tolist() == [max(0.0, 1 - counts["char_errors"] / counts["chars"]), 0.0]


def test_fitted_speaking_rate_is_total_characters_over_total_seconds(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    codes = lambda t: np.zeros((SPEC.num_codebooks, t), np.int16)  # noqa: E731
    with wds.TarWriter(str(split / SHARD_NAME.format(0))) as sink:  # 8 chars in 2 s, 8 chars in 1 s
        for i, (text, frames) in enumerate(((TEXT, 50), ("في الصباح", 25))):
            sink.write(utterance_to_tar_sample(f"u{i}", Utterance(f"u{i}", text, codes(frames))))
    (split / INDEX_NAME).write_text(json.dumps({"audio_spec": SPEC.to_dict(), "shards": [
        {"name": SHARD_NAME.format(0), "samples": 2, "frames": 75, "bytes": 0, "speakers": {}}]}))
    assert fit_chars_per_second([split]) == pytest.approx(16 / 3)
    assert fit_chars_per_second([split], max_samples=1) == pytest.approx(4.0)
    run = tmp_path / "run"
    (run / "checkpoints" / "step000002").mkdir(parents=True)
    assert read_chars_per_second(run / "checkpoints" / "step000002") is None
    save_chars_per_second(run, 16 / 3, [split])
    assert read_chars_per_second(run / "checkpoints" / "step000002") == pytest.approx(16 / 3)


def test_make_samples_decodes_only_when_a_reward_needs_audio(tmp_path):
    codec = load_codec(CodecConfig(path=str(build_seeded_demo_dac(tmp_path / "codec.pth")), device="cpu"))
    rng = np.random.default_rng(0)
    codes = [torch.from_numpy(rng.integers(0, 1024, (8, t))) for t in (6, 0)]
    ref = rng.integers(0, 1024, (8, 4))
    plain = make_samples(codes, [TEXT, TEXT], [True, False], spec=codec.spec)
    assert plain[0].audio is None and plain[0].codes.shape == (6, 8) and torch.equal(plain[0].codes, codes[0].T)
    assert plain[1].finished is False and plain[0].meta["frame_rate"] == 25.0
    heard = make_samples(codes, [TEXT, TEXT], [True, True], spec=codec.spec, codec=codec, needs_audio=True,
                         reference_codes=[ref, ref])
    hop = int(codec.spec.samples_per_frame)
    assert heard[0].sample_rate == codec.sample_rate and len(heard[0].audio) == 6 * hop and len(heard[1].audio) == 0
    assert len(heard[0].reference_audio) == 4 * hop and heard[0].reference_audio is heard[1].reference_audio
    assert np.allclose(heard[0].audio, codec.decode(codes[0]).numpy())


def plugin_reward(samples):
    return [1.0] * len(samples)


@pytest.mark.parametrize("weights, context, match", [
    ({}, {}, "no rewards"),
    ({"stop": 0}, {}, "must be a positive number"),
    ({"stop": True}, {}, "must be a positive number"),
    ({"nope": 1.0}, {}, "neither a built-in"),
    ({"no_such_package.mod:fn": 1.0}, {}, "not importable"),
    ({"cer": 1.0}, {}, "needs a local Whisper folder"),
    ({"cer": 1.0}, {"whisper": "/nonexistent/whisper"}, "not a local Whisper folder"),
    ({"sim": 1.0}, {"wavlm": "/nonexistent/wavlm"}, "not a local WavLMForXVector folder"),
    ({"duration": 1.0}, {"chars_per_second": -1.0}, "positive"),
])
def test_check_rewards_refuses_from_files_alone(weights, context, match):
    with pytest.raises(ConfigError, match=match):
        check_rewards(weights, context)


def test_check_rewards_accepts_what_is_there():
    check_rewards({"sim": 1.0, "dnsmos": 0.5, "stop": 1, "duration": 1.0, f"{__name__}:plugin_reward": 2.0},
                  {"chars_per_second": 12.0})


def test_check_rewards_names_a_missing_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "speechmos" else real(name, *a))
    with pytest.raises(ConfigError, match="the dnsmos reward needs the speechmos package"):
        check_rewards({"stop": 1.0, "dnsmos": 1.0})
