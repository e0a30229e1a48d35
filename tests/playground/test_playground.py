"""The playground's logic in process (no browser): what a generation saves, the bad inputs a page can send
(each one `UserError` line, the playground still serving), what a page may name, the newest-200 store, and the
time and frame limits."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from higgs_ds.errors import ConfigError, DataError, UserError
from higgs_ds.inference import GenerationConfig, generate
from higgs_ds.output_guard import OutputKind
from higgs_ds.playground import SPEAKER, UPLOAD, ZERO_SHOT, Playground, PlaygroundConfig, Request, Sampling
from higgs_ds.playground.store import GenerationStore
from higgs_ds.playground.ui import error_line

GREEDY = Sampling(greedy=True, max_frames=60)


@pytest.fixture(scope="module")
def pg(export_dir):
    return Playground(PlaygroundConfig(export_dir))


def _wav(path: Path, seconds: float, amplitude: float, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def test_a_generation_reproduces_the_training_codes_and_is_saved_with_its_settings(pg, overfit, export_dir,
                                                                                   demo_codec):
    utt = overfit.utterances[0]  # trained without a reference: zero-shot reproduces it
    gen = pg.generate(Request(utt.text + "  ", voice=ZERO_SHOT, sampling=GREEDY))
    assert np.array_equal(gen.codes, utt.codes) and gen.finished and gen.stopped_by is None
    assert gen.folder.parent == export_dir.parent / "playground"  # beside the export
    wav, rate = soundfile.read(gen.folder / "out.wav")
    hop = int(demo_codec.spec.samples_per_frame)
    assert rate == demo_codec.sample_rate == gen.sample_rate and len(wav) == len(gen.wav) == utt.codes.shape[1] * hop
    assert np.array_equal(np.load(gen.folder / "codes.npy"), utt.codes)
    assert (gen.folder / "spectrogram.png").stat().st_size > 0
    settings = json.loads((gen.folder / "settings.json").read_text(encoding="utf-8"))
    assert settings["text"] == utt.text + "  " and settings["normalised"] == utt.text == gen.normalised
    assert settings["tag"] == "export" and settings["generation"]["temperature"] == 0
    assert settings["generation"]["max_new_frames"] == 60 and settings["frames"] == utt.codes.shape[1]


def test_a_reference_upload_is_encoded_and_used(pg, overfit, tmp_path, demo_codec):
    utt = overfit.utterances[1]  # its reference codes (x3: 0.72 s) decoded to a clip, re-encoded on upload
    clip = tmp_path / "ref.wav"
    codes = torch.as_tensor(np.tile(utt.ref_codes, (1, 3))).long()
    soundfile.write(clip, demo_codec.decode(codes).numpy(), demo_codec.sample_rate)
    reencoded = demo_codec.encode([torch.from_numpy(soundfile.read(clip, dtype="float32")[0])], 16000)[0]
    gen = pg.generate(Request(utt.text, voice=UPLOAD, upload=clip, ref_text=utt.ref_text, sampling=GREEDY))
    assert np.array_equal(np.load(gen.folder / "reference_codes.npy"), reencoded.numpy())
    assert json.loads((gen.folder / "settings.json").read_text())["ref_text"] == utt.ref_text
    zero_shot = pg.generate(Request(utt.text, voice=ZERO_SHOT, sampling=GREEDY))  # the same text, no reference
    assert not np.array_equal(gen.codes, zero_shot.codes)  # the reference reached the model's prompt


@pytest.fixture(scope="module")
def scored(export_dir, overfit, tmp_path_factory, demo_codec):
    """A playground with the real metric models (DNSMOS, resemblyzer) and one upload generation's inputs."""
    from higgs_ds.quality.scorer import ScorerConfig

    pg = Playground(PlaygroundConfig(export_dir, save_dir=tmp_path_factory.mktemp("scored") / "saved",
                                     scorer=ScorerConfig(mcd=False)))
    utt = overfit.utterances[1]
    clip = tmp_path_factory.mktemp("ref") / "ref.wav"
    soundfile.write(clip, demo_codec.decode(torch.as_tensor(np.tile(utt.ref_codes, (1, 3))).long()).numpy(),
                    demo_codec.sample_rate)
    return pg, Request(utt.text, voice=UPLOAD, upload=clip, ref_text=utt.ref_text, sampling=GREEDY)


def test_scores_are_computed_by_the_real_metric_models_and_saved(scored):
    pg, request = scored
    gen = pg.generate(request)
    saved = json.loads((gen.folder / "settings.json").read_text())
    assert saved["scores"] == gen.scores and saved["score_errors"] == {} == gen.score_errors
    assert {"sim", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"} <= set(gen.scores)
    assert all(np.isfinite(v) for v in gen.scores.values())
    assert -1 <= gen.scores["sim"] <= 1 and all(1 <= gen.scores[k] <= 5 for k in gen.scores if k.startswith("dnsmos"))


def test_a_failing_metric_is_named_and_the_generation_kept_with_the_others(scored, monkeypatch, caplog):
    from higgs_ds.playground.ui import _details
    from higgs_ds.quality.models import DnsMos

    def broken(self, wav, rate):
        raise RuntimeError("onnx session lost")

    pg, request = scored
    monkeypatch.setattr(DnsMos, "__call__", broken)
    with caplog.at_level("WARNING", logger="higgs_ds.playground.session"):
        gen = pg.generate(request)
    assert gen.score_errors == {"dnsmos": "RuntimeError: onnx session lost"} and set(gen.scores) == {"sim"}
    assert "the dnsmos score failed" in caplog.text and "onnx session lost" in caplog.text
    assert json.loads((gen.folder / "settings.json").read_text())["score_errors"] == gen.score_errors
    assert "dnsmos score failed: RuntimeError: onnx session lost" in _details(gen)


@pytest.mark.parametrize("text, expected", [
    ("", "is empty once normalised"), ("   \n ", "is empty once normalised"), ("\u0640\u200c", "is empty once"),
    ("؟!... «»", "has no letter or digit"), ("\u064e\u064f", "has no letter or digit")])
def test_text_without_words_is_one_error_line(pg, text, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        pg.generate(Request(text, sampling=GREEDY))
    line = error_line(info.value)
    assert line.startswith("error: the text ") and "(text): type words to speak" in line and "\n" not in line
    with pytest.raises(ConfigError, match=expected):
        pg.normalise(text)


def _not_audio(tmp: Path) -> Path:
    path = tmp / "notes.wav"
    path.write_text("these are not samples\n" * 50)
    return path


@pytest.fixture(scope="module")
def small_uploads(export_dir, tmp_path_factory):
    return Playground(PlaygroundConfig(export_dir, save_dir=tmp_path_factory.mktemp("s") / "saved",
                                       max_upload_bytes=300_000))


@pytest.mark.parametrize("make, transcript, error, expected", [
    (lambda tmp: _wav(tmp / "quiet.wav", 1.0, 0.0), "مرحبا", DataError, "the reference is silence"),
    (lambda tmp: _wav(tmp / "short.wav", 0.2, 0.5), "مرحبا", DataError, "the reference is 0.20 s long"),
    (_not_audio, "مرحبا", DataError, r"notes.wav\) is not a readable sound file"),
    (lambda tmp: _wav(tmp / "big.wav", 12.0, 0.5), "مرحبا", DataError, r"is 0\.4 MB, over the 0\.3 MB limit"),
    (lambda tmp: _wav(tmp / "ok.wav", 1.0, 0.5), "؟؟", ConfigError, "reference transcript .* has no letter"),
    (lambda tmp: tmp / "gone.wav", "مرحبا", DataError, "the uploaded reference is gone"),
])
def test_a_bad_reference_is_one_error_and_the_playground_keeps_serving(small_uploads, overfit, tmp_path, make,
                                                                      transcript, error, expected):
    pg = small_uploads
    saved = pg.store.entries()
    with pytest.raises(error, match=expected) as info:
        pg.generate(Request("مرحبا بكم", voice=UPLOAD, upload=make(tmp_path), ref_text=transcript, sampling=GREEDY))
    assert error_line(info.value).startswith("error: ") and "(reference " in error_line(info.value)
    assert not list(pg.scratch.iterdir())  # the upload's copy is removed
    assert pg.store.entries() == saved  # nothing saved
    assert pg.generate(Request(overfit.utterances[0].text, sampling=GREEDY)).finished  # still serving


def test_an_hour_of_flac_under_the_size_limit_is_refused_from_its_header_without_decoding(tmp_path):
    from higgs_ds.data.text import ArabicTextConfig
    from higgs_ds.playground.inputs import _copy_capped, read_reference

    clip = tmp_path / "hour.flac"  # 0.2 MB on disk; decoded it would be 230 MB of float32
    with soundfile.SoundFile(clip, "w", 16000, 1, format="FLAC") as f:
        for _ in range(55):
            f.write(np.zeros(1 << 20, np.float32))
    assert clip.stat().st_size < 300_000
    scratch = tmp_path / "scratch"
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"the reference is 3604\.5 s long \(reference audio\): give at most 30"):
            read_reference(clip, "مرحبا", ArabicTextConfig(), scratch, max_bytes=300_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB allocated: the clip was decoded"
    assert not list(scratch.iterdir())  # its copy is removed
    with pytest.raises(DataError, match="grew over the upload limit"):  # the copy reads at most limit + 1 bytes
        _copy_capped(clip, scratch, 1000, "reference audio")
    assert not list(scratch.iterdir())


def test_a_page_names_only_what_the_source_offers(pg, overfit):
    assert pg.tags() == ["export"] and pg.voices() == []  # an export: one set of weights, no eval shards
    text = overfit.utterances[0].text
    for tag in ("../../etc", "step000001", "/etc/passwd"):
        with pytest.raises(ConfigError, match="is not a checkpoint of"):
            pg.generate(Request(text, tag=tag, sampling=GREEDY))
    with pytest.raises(ConfigError, match="is not a speaker of the run's eval shards"):
        pg.generate(Request(text, voice=SPEAKER, speaker="/etc/passwd", sampling=GREEDY))
    with pytest.raises(ConfigError, match="voice 'file' is not one of"):
        pg.generate(Request(text, voice="file", sampling=GREEDY))


def test_the_save_folder_is_never_an_input_or_another_commands_output(export_dir, tmp_path):
    with pytest.raises(ConfigError, match="lies inside the input"):
        Playground(PlaygroundConfig(export_dir, save_dir=export_dir / "playground"))
    other = OutputKind("prepare_data build").create(tmp_path / "built")
    (other / "x").write_text("x")
    with pytest.raises(ConfigError, match="was written by prepare_data build"):
        Playground(PlaygroundConfig(export_dir, save_dir=other))


def test_the_store_keeps_the_newest_200(tmp_path):
    store = GenerationStore(tmp_path / "saved")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "notes.txt").write_text("mine")  # not a generation: never pruned
    start = 1_800_000_000.0
    names = [store.save({"x.txt": lambda p, i=i: p.write_text(str(i))}, {"i": i}, now=start + i).name
             for i in range(203)]
    kept = store.entries()
    assert [p.name for p in kept] == names[3:] and len(kept) == 200
    assert json.loads((kept[0] / "settings.json").read_text()) == {"i": 3} and (kept[-1] / "x.txt").read_text() == "202"
    assert (tmp_path / "saved" / "notes.txt").read_text() == "mine"
    same = store.save({}, {}, now=start + 202)  # the same microsecond: a new name, not an overwrite
    assert same.name == names[-1][:-1] + "b"


def test_should_stop_ends_decoding_inside_the_loop_and_changes_nothing_else(overfit):
    utt = overfit.utterances[0]
    from higgs_ds.inference import TTSRequest

    req = [TTSRequest(utt.text)]
    cfg = GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=60)
    plain = generate(overfit.model, overfit.renderer, req, cfg)
    never = generate(overfit.model, overfit.renderer, req, cfg, should_stop=lambda: False)
    assert torch.equal(plain.delayed[0], never.delayed[0]) and plain.steps == never.steps and not never.stopped
    asked = []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) >= 3

    stopped = generate(overfit.model, overfit.renderer, req, cfg, should_stop=third_time)
    assert stopped.stopped and not stopped.finished[0] and stopped.steps == 3  # the prefill, then 2 more forwards
    assert torch.equal(stopped.delayed[0], plain.delayed[0][:, :stopped.delayed[0].shape[1]])
    assert stopped.delayed[0].shape[1] == 1 + 3  # the BOS column and one column per forward


def test_the_time_limit_and_the_frame_limit(export_dir, overfit, tmp_path):
    pg = Playground(PlaygroundConfig(export_dir, save_dir=tmp_path / "s", time_limit_s=1e-9, frame_limit=100))
    gen = pg.generate(Request(overfit.utterances[0].text, sampling=GREEDY))
    assert gen.stopped_by == "time limit" and not gen.finished
    assert json.loads((gen.folder / "settings.json").read_text())["stopped_by"] == "time limit"
    with pytest.raises(ConfigError, match="maximum length 101 frames is outside 1..100"):
        pg.generate(Request(overfit.utterances[0].text, sampling=Sampling(max_frames=101)))
    short = Playground(PlaygroundConfig(export_dir, save_dir=tmp_path / "t"))
    gen = short.generate(Request(overfit.utterances[0].text, sampling=Sampling(max_frames=10)))
    assert gen.stopped_by == "frame limit" and gen.frames == 10 - (overfit.model.config.audio_num_codebooks - 1)


def test_sampled_generation_follows_its_seed(pg, overfit):
    sampled = Sampling(greedy=False, temperature=1.0, top_k=50, top_p=0.95, seed=7, max_frames=12)
    a, b = (pg.generate(Request(overfit.utterances[0].text, sampling=sampled)) for _ in range(2))
    assert np.array_equal(a.codes, b.codes) and a.folder != b.folder
    with pytest.raises(UserError, match="top_p"):
        pg.generate(Request(overfit.utterances[0].text, sampling=Sampling(greedy=False, top_p=0.0)))


def test_the_command_line_binds_this_machine_unless_told_and_refuses_bad_flags(capsys):
    from higgs_ds.errors import run_cli
    from launch import playground as cli

    a = cli._parse(["runs/x"])
    assert (a.host, a.port, a.save_dir, a.keep) == ("127.0.0.1", 7860, None, 200)
    assert cli.host_warning("127.0.0.1") is None and cli.host_warning("localhost") is None
    assert "every machine that can reach this one" in cli.host_warning("0.0.0.0")
    for flags, named in ((["runs/x", "--port", "0"], "--port"), (["runs/x", "--time-limit", "0"], "--time-limit"),
                         (["runs/x", "--max-upload", "lots"], "--max-upload")):
        assert run_cli(cli.main, flags) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and named in err and "\n" not in err
