"""The real-checkpoint path end to end on tiny stand-ins of the same formats: audio encoded by a Higgs Audio v2
tokenizer folder -> shards -> a 2-rank ZeRO-3 run (its listening eval decodes with the same tokenizer) ->
export -> generation of a 24 kHz wav; and a run that would train foreign codes into it stops at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from higgs_ds.audio_spec import read_spec
from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo import build_seeded_demo_dac, demo_sentences
from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
from higgs_ds.data.shards import load_spec
from higgs_ds.export import export
from higgs_ds.train.metrics import read_metrics
from launch import generate as generate_cli
from tests.codec.tiny_tokenizer import save_tiny_higgs_tokenizer
from tests.harness import run_training

pytestmark = pytest.mark.integration


def _split(root: Path, name: str, codec: CodecConfig, sentences: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i, text in enumerate(sentences):
        seconds = 0.4 + 0.1 * (i % 4)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        soundfile.write(root / f"{name}{i}.wav", wave.astype(np.float32), 16000)
        rows.append({"id": f"{name}{i}", "text": text, "audio": f"{name}{i}.wav", "speaker": f"s{i % 2}"})
    manifest = root / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    build_shards(BuildConfig(manifest=str(manifest), out_dir=str(root / name), codec=codec, max_samples_per_shard=3,
                             progress=False))
    return root / name


@pytest.fixture(scope="module")
def higgs_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("higgs_data")
    codec = CodecConfig(path=str(save_tiny_higgs_tokenizer(root / "audio_tokenizer")))
    sentences = demo_sentences()
    train_demo_tokenizer(sentences, root / "tokenizer", vocab_size=800)
    return {"train": _split(root, "train", codec, sentences[:12], 0),
            "eval": _split(root, "eval", codec, sentences[12:14], 1),
            "tokenizer": root / "tokenizer", "audio_tokenizer": root / "audio_tokenizer"}


@pytest.fixture(scope="module")
def higgs_run(tmp_path_factory, higgs_data) -> Path:
    run = tmp_path_factory.mktemp("higgs_run")
    run_training(run, higgs_data, "steps=3", "log_every=1", "save_every=3", "eval_every=3", "predict_every=0",
                 "audio_eval.every=3", "audio_eval.num_prompts=1", "audio_eval.generation.max_new_frames=12")
    return run


def test_higgs_shards_train_export_and_generate_24khz_speech(tmp_path, higgs_data, higgs_run):
    spec = load_spec(higgs_data["train"])
    assert (spec.codec, spec.sample_rate, spec.frame_rate, spec.num_codebooks) == ("higgs", 24000, 25.0, 8)
    run = higgs_run
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
    listened = list((run / "audio_eval" / "step000003").glob("*.wav"))  # decoded by the spec's tokenizer
    assert listened and soundfile.info(str(listened[0])).samplerate == 24000
    meta = json.loads((run / "checkpoints" / "step000003" / "config.json").read_text())
    assert meta["audio_spec"] == spec.to_dict()  # the spec travels into every checkpoint

    exported = export(run / "checkpoints", tmp_path / "export", layout="hf")
    assert read_spec(exported) == spec  # ... and into the export
    out = tmp_path / "gen" / "speech.wav"
    generate_cli.main([str(exported), "--text", demo_sentences()[20], "--out", str(out), "--greedy",
                       "--max-new-frames", "15"])  # the codec: the one the export's spec names
    wav, rate = soundfile.read(out)
    frames = np.load(out.with_suffix(".npy")).shape[1]
    assert rate == 24000 and frames > 0 and len(wav) == frames * 960


def test_training_foreign_codes_into_a_checkpoint_stops_at_start_up(tmp_path, higgs_data, higgs_run):
    init = export(higgs_run / "checkpoints", tmp_path / "higgs_export", layout="boson")
    dac = CodecConfig(path=str(build_seeded_demo_dac(tmp_path / "dac.pth")))
    dac_data = {**higgs_data, "train": _split(tmp_path, "dac_train", dac, demo_sentences()[:4], 2),
                "eval": _split(tmp_path, "dac_eval", dac, demo_sentences()[4:6], 3)}
    with pytest.raises(AssertionError) as failure:
        run_training(tmp_path / "foreign", dac_data, "steps=1", f"model.init={init}", "eval_every=0",
                     "predict_every=0", ranks=1)
    log = str(failure.value)
    assert "audio spec mismatch" in log and f"checkpoint {init} was trained on: higgs codec, 24000 Hz" in log
    assert "train shards" in log and "dac codec, 16000 Hz" in log and "allow_audio_spec_change" in log
