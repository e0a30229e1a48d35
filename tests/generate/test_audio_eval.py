"""The training-time audio eval and the ASR / speaker-similarity hooks (stub scorers only)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from higgs_ds.codec import CodecConfig, load_codec
from higgs_ds.data.demo import build_seeded_demo_dac
from higgs_ds.data.shards import SHARD_NAME, utterance_to_tar_sample, write_shard
from higgs_ds.inference import normalize_for_eval
from higgs_ds.quality.scorer import SpeechScorer, error_counts
from higgs_ds.train.audio_eval import (
    AudioEvalConfig,
    AudioEvaluator,
    compare_codes,
    listening_summary,
    read_utterances,
)
from higgs_ds.train.metrics import MetricsWriter, read_metrics


class FakeWandbRun:
    def __init__(self):
        self.logged = []

    def log(self, data, step):
        self.logged.append((step, data))


def _scorer(utts):
    """Transcribes the first prompt exactly and drops the last word of the second; fixed embeddings."""
    transcripts = iter([utts[0].text, " ".join(utts[1].text.split()[:-1])])
    return SpeechScorer(transcriber=lambda wav, sr: next(transcripts),
                        speaker_embedder=lambda wav, sr: np.array([1.0, 2.0, 3.0]))


def test_audio_eval_on_the_overfit_model_logs_saves_and_scores(overfit, tmp_path):
    split = tmp_path / "heldout"
    split.mkdir()
    write_shard(split / SHARD_NAME.format(0), [utterance_to_tar_sample(u.id, u) for u in overfit.utterances])
    codec_path = build_seeded_demo_dac(tmp_path / "codec.pth")
    cfg = AudioEvalConfig(every=10, num_prompts=2)  # the codec comes from the spec
    spec = load_codec(CodecConfig(path=str(codec_path))).spec
    (evaluator,) = AudioEvaluator.from_config(cfg, overfit.model, overfit.tokenizer, str(split), spec,
                                           scorer=_scorer(overfit.utterances))
    writer = MetricsWriter(tmp_path / "run", {}, wandb_project=None, enabled=True)
    (tmp_path / "run").mkdir()
    writer.wandb = FakeWandbRun()
    overfit.model.train()
    m = evaluator.run(20, tmp_path / "run", writer)
    assert overfit.model.training  # the evaluator restores the mode it found
    overfit.model.eval()

    assert m["tf/acc_audio"] == 1.0 and all(m[f"tf/acc_audio_cb{k}"] == 1.0 for k in range(8))
    assert m["tf/loss_audio"] < 0.5
    assert m["gen/frame_acc"] == 1.0 and m["gen/cb0_acc"] == 1.0
    assert m["gen/length_ratio"] == 1.0 and m["gen/stop_rate"] == 1.0
    words = len(normalize_for_eval(overfit.utterances[1].text).split())
    total = sum(len(normalize_for_eval(u.text).split()) for u in overfit.utterances)
    assert m["score/wer"] == pytest.approx(1 / total) and words > 1
    assert m["score/sim"] == pytest.approx(1.0)

    out = tmp_path / "run" / "audio_eval" / "step000020"
    for u in overfit.utterances:
        assert np.array_equal(np.load(out / f"{u.id}.npy"), u.codes)
        assert (out / f"{u.id}.wav").stat().st_size > 44 and (out / f"{u.id}.png").stat().st_size > 0
        assert (tmp_path / "run" / "audio_eval" / "reference" / f"{u.id}.wav").is_file()
    record = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="audio_eval")
    assert [r["step"] for r in record] == [20] and record[0]["gen/frame_acc"] == 1.0
    (step, media), (scalar_step, scalars) = writer.wandb.logged  # audio + images, then the scalars
    assert step == scalar_step == 20
    assert sorted(media) == sorted(f"audio_eval/{u.id}/{kind}" for u in overfit.utterances  # references: first eval
                                   for kind in ("audio", "spectrogram", "reference", "reference_spectrogram"))
    assert scalars["audio_eval/gen/frame_acc"] == 1.0


def test_compare_codes_counts_missing_frames_as_wrong():
    ref = torch.arange(16).view(2, 8)
    gen = ref[:, :6].clone()
    gen[1, 0] = 99  # frame 0 wrong in one codebook only
    m = compare_codes(gen, ref)
    assert m == {"frame_acc": 5 / 8, "cb0_acc": 6 / 8, "length_ratio": 6 / 8}


def test_asr_error_counts_ignore_diacritics_and_punctuation():
    ref = "ذَهَبَ الوَلَدُ إلى المَدْرَسَةِ."
    assert error_counts(ref, "ذهب الولد إلى المدرسة")["word_errors"] == 0
    counts = error_counts(ref, "ذهب الولد المدرسة")
    assert counts["word_errors"] == 1 and counts["words"] == 4
    assert counts["char_errors"] == 3 and counts["chars"] == len("ذهبالولدإلىالمدرسة")


def test_scorer_without_hooks_reports_nothing_and_checks_lengths():
    assert SpeechScorer().score([np.zeros(10)], 16000, ["نص"]) == {}
    with pytest.raises(ValueError, match="waveforms"):
        SpeechScorer(transcriber=lambda w, sr: "").score([np.zeros(10)], 16000, [])


def test_audio_eval_config_validation():
    with pytest.raises(ValueError, match="num_prompts"):
        AudioEvalConfig(num_prompts=0)
    assert AudioEvalConfig(generation={"max_new_frames": 10}).generation.max_new_frames == 10
    assert json.dumps(AudioEvalConfig().__dict__, default=lambda o: o.__dict__)


def test_training_prompts_are_evaluated_apart_and_summarised(overfit, tmp_path):
    split = tmp_path / "train_split"
    split.mkdir()
    write_shard(split / SHARD_NAME.format(0), [utterance_to_tar_sample(u.id, u) for u in overfit.utterances])
    codec_path = build_seeded_demo_dac(tmp_path / "codec.pth")
    spec = load_codec(CodecConfig(path=str(codec_path))).spec
    cfg = AudioEvalConfig(every=10, num_prompts=1, train_prompts=2)  # greedy: the overfit codes come back
    scorer = SpeechScorer(speaker_embedder=lambda wav, sr: np.array([1.0, 2.0, 3.0]))
    evaluators = AudioEvaluator.from_config(cfg, overfit.model, overfit.tokenizer, str(split), spec, scorer=scorer,
                                            train_shards=str(split))
    assert [e.name for e in evaluators] == ["", "train"] and len(evaluators[1].utterances) == 2
    run = tmp_path / "run"
    run.mkdir()
    writer = MetricsWriter(run, {}, wandb_project=None, enabled=True)
    held_out, memorised = (e.run(10, run, writer) for e in evaluators)
    assert memorised["train/gen/frame_acc"] == 1.0 and "gen/frame_acc" in held_out
    assert sorted(p.name for p in (run / "audio_eval" / "train" / "step000010").glob("*.wav")) == \
        sorted(f"{u.id}.wav" for u in overfit.utterances)
    table = listening_summary(run)
    assert "held-out prompts" in table and "training prompts (memorised)" in table
    listen = [line.split()[1] for line in table.splitlines() if "listen:" in line]
    assert len(listen) == 2 and all(Path(p).is_file() for p in listen)


def test_similarity_to_other_voices_is_the_cross_speaker_baseline():
    a, b = np.array([1.0, 0.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.0])
    scorer = SpeechScorer(speaker_embedder=lambda wav, sr: wav[:4])
    other = scorer.similarity_to_other_voices([a, b], 16000, [a, b], ["s0", "s1"])
    assert other == pytest.approx(np.sqrt(0.5))  # cos(a, b), both ways; own-voice similarity would be 1
    assert scorer.similarity_to_other_voices([a, b], 16000, [a, b], ["s0", "s0"]) is None


def test_listening_prompts_take_one_per_speaker_with_a_voice_reference_first(tmp_path):
    rng = np.random.default_rng(0)
    codes = lambda t: rng.integers(0, 1024, size=(8, t)).astype(np.int16)  # noqa: E731
    from higgs_ds.data.schema import Utterance

    utts = [Utterance("a_plain", "نص", codes(5), speaker="a"),
            Utterance("b_plain", "نص", codes(5), speaker="b"),
            Utterance("a_clone", "نص", codes(5), speaker="a", ref_text="مرجع", ref_codes=codes(4)),
            Utterance("a_clone2", "نص", codes(5), speaker="a", ref_text="مرجع", ref_codes=codes(4)),
            Utterance("c_clone", "نص", codes(5), speaker="c", ref_text="مرجع", ref_codes=codes(4))]
    split = tmp_path / "split"
    split.mkdir()
    write_shard(split / SHARD_NAME.format(0), [utterance_to_tar_sample(u.id, u) for u in utts])
    spec = load_codec(CodecConfig(path=str(build_seeded_demo_dac(tmp_path / "codec.pth")))).spec
    # speakers in shard order; the cloning utterance of `a` replaces its plain one; `b` has none
    assert [u.id for u in read_utterances(str(split), 3, spec)] == ["b_plain", "a_clone", "c_clone"]
    assert [u.id for u in read_utterances(str(split), 5, spec)] == ["b_plain", "a_clone", "c_clone", "a_plain",
                                                                     "a_clone2"]
