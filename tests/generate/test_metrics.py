"""The offline speech metrics behind `SpeechScorer`, on espeak-ng clips with known relations: a clip
scored against itself, the same sentence in another voice, and white noise. The Whisper and WavLM
paths run end to end on tiny random-weight models saved to a local folder; `launch/evaluate.py`
scores a small folder."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import soundfile
import torch

from higgs_ds.codec import load_audio
from higgs_ds.data.demo import DEMO_SPEAKERS, synthesize
from higgs_ds.quality.models import DnsMos, ResemblyzerEmbedder
from higgs_ds.quality.scorer import ScorerConfig, SpeechScorer, aggregate, build_scorer, error_counts, summarize
from higgs_ds.quality.signal import dtw_path, resample

pytestmark = [pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed"),
              pytest.mark.usefixtures("one_torch_thread")]
TEXT = "ذهب الولد إلى المدرسة في الصباح"
RATE = 16000



@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """16 kHz: the clip, the same sentence in another demo voice, and white noise as long as the clip."""
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for name, spk in (("clip", DEMO_SPEAKERS[1]), ("other_voice", DEMO_SPEAKERS[3])):
        synthesize(TEXT, spk, d / f"{name}.wav")
        wav, sr = load_audio(d / f"{name}.wav")
        out[name] = resample(wav.numpy(), sr, RATE)
    out["noise"] = (np.random.default_rng(0).standard_normal(len(out["clip"])) * 0.1).astype(np.float32)
    return out


def test_each_metric_ranks_self_over_other_voice_over_noise(clips):
    clean = clips["clip"]
    scorer = SpeechScorer(transcriber=lambda w, sr: TEXT if np.array_equal(w, clean) else "",  # stub recogniser
                          speaker_embedder=ResemblyzerEmbedder(), quality=DnsMos(), mcd=True)
    names = ("clip", "other_voice", "noise")
    rows = scorer.score_each([clips[n] for n in names], RATE, [TEXT] * 3, [clean] * 3)
    same, other, noise = rows
    assert same["sim"] == pytest.approx(1.0, abs=1e-5) and same["mcd"] == pytest.approx(0.0, abs=1e-9)
    assert same["cer"] == same["wer"] == 0.0 and noise["cer"] == 1.0
    assert noise["sim"] < other["sim"] < 0.9  # measured: 0.46 < 0.62 for these two voices
    assert 0 < other["mcd"] < noise["mcd"]
    assert noise["dnsmos_ovrl"] < min(same["dnsmos_ovrl"], other["dnsmos_ovrl"]) and noise["dnsmos_ovrl"] < 2
    corpus = aggregate(rows)  # corpus CER: total edits over total reference characters
    assert corpus["cer"] == pytest.approx((other["char_errors"] + noise["char_errors"]) / (3 * same["chars"]))
    assert corpus["sim"] == pytest.approx(np.mean([r["sim"] for r in rows]))


def test_summary_mean_and_t_interval():
    s = summarize([{"mcd": 1.0}, {"mcd": 2.0}, {"mcd": 3.0, "sim": 0.5}])
    assert s["mcd"]["mean"] == 2.0 and s["mcd"]["n"] == 3
    assert s["mcd"]["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)
    assert s["sim"]["n"] == 1 and math.isnan(s["sim"]["ci95"])


def test_dtw_path_has_the_minimum_cost():
    cost = np.random.default_rng(0).random((7, 5))
    best = np.full((8, 6), np.inf)
    best[0, 0] = 0.0
    for i in range(1, 8):
        for j in range(1, 6):
            prev = best[i - 1, j - 1] if (i, j) != (1, 1) else 0.0
            best[i, j] = cost[i - 1, j - 1] + min(prev, best[i - 1, j], best[i, j - 1])
    path = dtw_path(cost)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (6, 4)
    assert np.all(np.diff(path, axis=0) >= 0) and np.all(np.diff(path, axis=0).sum(1) >= 1)
    assert cost[path[:, 0], path[:, 1]].sum() == pytest.approx(best[7, 5])


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table (the base vocabulary of Whisper's byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + n) for n in range(len(extra))]


def save_tiny_whisper(path):
    """A random-weight multilingual Whisper with a byte-level vocabulary, saved like a real checkpoint."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(_bytes_to_unicode())}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), unk_token=eot, bos_token=eot,
                           eos_token=eot, pad_token=eot)
    specials = ["<|startoftranscript|>", "<|ar|>", "<|transcribe|>", "<|translate|>", "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    ids = {s: tok.convert_tokens_to_ids(s) for s in [eot, *specials]}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=len(tok), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_target_positions=256, pad_token_id=ids[eot], bos_token_id=ids[eot], eos_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"]))
    gc = model.generation_config  # what a released multilingual checkpoint's generation_config.json holds
    gc.lang_to_id, gc.is_multilingual = {"<|ar|>": ids["<|ar|>"]}, True
    gc.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    gc.no_timestamps_token_id, gc.begin_suppress_tokens, gc.suppress_tokens = ids["<|notimestamps|>"], None, None
    gc._from_model_config = False
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(path)


def save_tiny_wavlm(path):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(0)
    WavLMForXVector(WavLMConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        tdnn_dim=(8, 8), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8, num_buckets=8,
        max_bucket_distance=20)).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, return_attention_mask=True).save_pretrained(path)


def test_whisper_and_wavlm_paths_from_local_folders(clips, tmp_path):
    save_tiny_whisper(tmp_path / "whisper")
    save_tiny_wavlm(tmp_path / "wavlm")
    scorer = build_scorer(ScorerConfig(resemblyzer=False, dnsmos=False, mcd=False, whisper=str(tmp_path / "whisper"),
                                       wavlm=str(tmp_path / "wavlm")))
    transcript = scorer.transcriber(clips["clip"], RATE)
    assert isinstance(transcript, str) and transcript == scorer.transcriber(clips["clip"], RATE)  # deterministic
    row = scorer.score_one(clips["clip"], RATE, TEXT, clips["clip"], RATE)
    expected = error_counts(TEXT, transcript)  # the row scores this transcript against the text
    assert row["sim_wavlm"] == pytest.approx(1.0, abs=1e-5) and row["chars"] == expected["chars"] > 0
    assert row["cer"] == expected["char_errors"] / expected["chars"] and row["char_errors"] == expected["char_errors"]
    assert set(row) >= {"wer", "cer", "sim_wavlm"} and "sim" not in row and "mcd" not in row
    with pytest.raises(FileNotFoundError, match="not a local model folder"):
        build_scorer(ScorerConfig(resemblyzer=False, dnsmos=False, mcd=False, wavlm=str(tmp_path)))


def test_evaluate_writes_table_and_json(clips, tmp_path, capsys):
    from launch.evaluate import main

    gen, refs = tmp_path / "generated", tmp_path / "refs"
    gen.mkdir(), refs.mkdir()
    rows = []
    for i, name in enumerate(("clip", "other_voice", "noise")):  # references: the clean clip; one id not generated
        soundfile.write(refs / f"r{i}.wav", clips["clip"], RATE)
        rows.append({"id": f"u{i}", "text": TEXT, "audio": f"refs/r{i}.wav"})
        if name != "noise":
            soundfile.write(gen / f"u{i}.wav", clips[name], RATE)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    main([str(gen), "--manifest", str(tmp_path / "m.jsonl"), "--no-dnsmos", "--no-resemblyzer"])
    saved = json.loads((gen / "scores.json").read_text())
    assert saved["missing"] == ["u2"] and saved["scored"] == 2
    mcds = [saved["per_utterance"][u]["mcd"] for u in ("u0", "u1")]
    assert mcds[0] == pytest.approx(0.0, abs=1e-9) and mcds[1] > 0
    assert saved["summary"]["mcd"]["mean"] == pytest.approx(np.mean(mcds)) and saved["summary"]["mcd"]["n"] == 2
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if x.startswith("mcd"))
    mcd = saved["summary"]["mcd"]
    assert line.split()[1:4] == [f"{mcd['mean']:.4f}", f"{mcd['ci95']:.4f}", "2"]
    assert "missing: 1" in table


def test_generate_score_rates_outputs_against_the_voice_reference(clips, tmp_path, capsys):
    import argparse

    from higgs_ds.cli_options import add_scorer_args
    from launch.generate import score_outputs

    paths = []
    for name in ("clip", "noise"):
        soundfile.write(tmp_path / f"{name}.wav", clips[name], RATE)
        paths.append(tmp_path / f"{name}.wav")
    parser = argparse.ArgumentParser()
    add_scorer_args(parser)
    a = parser.parse_args(["--no-dnsmos"])
    a.ref_audio, a.out = paths[0], tmp_path / "speech.wav"
    result = score_outputs(paths, [TEXT, TEXT], a)
    rows = result["per_utterance"]
    assert rows["clip.wav"]["sim"] == pytest.approx(1.0, abs=1e-5) and rows["noise.wav"]["sim"] < 0.9
    assert "mcd" not in rows["clip.wav"]  # the voice reference speaks another text: no MCD
    saved = json.loads((tmp_path / "speech.scores.json").read_text())
    assert saved["summary"]["sim"]["n"] == 2 and "sim" in capsys.readouterr().out
