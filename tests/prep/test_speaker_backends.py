"""The optional back ends of `segment`: a pyannote-audio pipeline (an optional extra: a stub object stands in
for the external pipeline, and what is tested is our conversion of its turns into pieces, overlaps and
speakers) and Demucs source separation (models saved in the folder layout
`demucs.pretrained.get_model(name, repo=FOLDER)` reads, run through the real path: a tiny random HTDemucs,
and a pass-through whose vocals stem is the recording, `tests/prep/tiny_demucs.py`)."""

import json
import os
import re
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile

from higgs_ds.errors import ConfigError
from higgs_ds.prep import pyannote_diarizer
from higgs_ds.prep.diarize import OVERLAP, UNCERTAIN
from higgs_ds.prep.pyannote_diarizer import pieces_from_turns, speaker_turns
from higgs_ds.prep.segment import SegmentConfig, segment_recordings
from tests.prep.tiny_demucs import save_demucs

RATE = 16_000


@dataclass
class _Seg:  # pyannote.core.Segment's two fields
    start: float
    end: float


class _Annotation:
    def __init__(self, turns):
        self.turns = turns

    def itertracks(self, yield_label=False):
        assert yield_label
        for i, (start, end, label) in enumerate(self.turns):
            yield _Seg(start, end), f"t{i}", label


class StubPipeline:
    """Stands in for `pyannote.audio.Pipeline`: called with a file, returns pyannote 4's output object."""

    def __init__(self, turns):
        self.turns, self.calls = turns, []

    def __call__(self, source):
        self.calls.append(source)
        return type("DiarizeOutput", (), {"speaker_diarization": _Annotation(self.turns)})()


def test_turns_become_pieces_of_the_speech_spans():
    turns = [(1.0, 3.0, "SPEAKER_07"), (2.5, 4.0, "SPEAKER_02"), (6.0, 7.0, "SPEAKER_07")]
    assert speaker_turns(StubPipeline(turns), "x.wav") == turns
    pieces, labels = pieces_from_turns([(5, 45), (55, 80)], turns, rate=10)
    assert labels == ["SPEAKER_07", "SPEAKER_02"]
    assert [(p.start, p.end, p.speaker, p.reason) for p in pieces] == [
        (5, 10, None, UNCERTAIN), (10, 25, 0, None), (25, 30, None, OVERLAP), (30, 40, 1, None),
        (40, 45, None, UNCERTAIN), (55, 60, None, UNCERTAIN), (60, 70, 0, None), (70, 80, None, UNCERTAIN)]


def test_a_pyannote_pipeline_diarizes_segment_through_the_adapter(conversations, monkeypatch, tmp_path):
    """The stub returns the conversation's true turns: the overlap is dropped where it truly is, each voice
    is one speaker, and every sample is accounted for."""
    _, talk, _ = conversations
    stub = StubPipeline([(start, end, f"SPEAKER_{voice}") for start, end, voice in talk.turns])
    monkeypatch.setattr(pyannote_diarizer, "load_pipeline", lambda spec, device: stub)
    (tmp_path / "pipeline").mkdir()
    summary = segment_recordings(SegmentConfig(inputs=(str(talk.path),), out=str(tmp_path / "out"),
                                               speakers="diarize", diarizer=f"pyannote:{tmp_path / 'pipeline'}"))
    assert stub.calls == [str(talk.path)]
    rows = [json.loads(line) for line in (tmp_path / "out" / "segments.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["kept"]]
    for row in kept:  # each kept segment lies in one turn of the voice its speaker stands for
        inside = [v for s, e, v in talk.turns if s - 0.01 <= row["start"] and row["end"] <= e + 0.01]
        assert len(inside) == 1, row
    voices = {r["speaker"]: {v for s, e, v in talk.turns if s - 0.01 <= r["start"] and r["end"] <= e + 0.01}
              for r in kept}
    assert len(voices) == 3 and all(len(v) == 1 for v in voices.values())
    overlap = [r for r in rows if r["reason"] == "overlap"]
    assert len(overlap) == 1 and overlap[0]["start"] == pytest.approx(talk.overlap[0], abs=2e-3)
    assert overlap[0]["end"] == pytest.approx(talk.overlap[1], abs=2e-3)
    (row,) = summary["per_file"]
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(row["seconds"], abs=1 / RATE)
    centroids = [json.loads(line) for line in (tmp_path / "out" / "file_speakers.jsonl").read_text().splitlines()]
    assert len(centroids) == 3 and all(len(c["centroid"]) == 256 for c in centroids)


def test_the_pipeline_loader_switches_telemetry_off_and_names_the_extra(monkeypatch, tmp_path):
    """Whether pyannote-audio is installed or not: both branches, with `pyannote.audio` absent (None in
    sys.modules) and then a stand-in module recording what `Pipeline.from_pretrained` is given."""
    monkeypatch.delenv("PYANNOTE_METRICS_ENABLED", raising=False)
    monkeypatch.setitem(sys.modules, "pyannote.audio", None)  # not installed
    with pytest.raises(ConfigError, match=r"\[pyannote\]"):
        pyannote_diarizer.load_pipeline(f"pyannote:{tmp_path}")
    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "false"

    loaded, pipeline = [], object()
    hub = types.SimpleNamespace(from_pretrained=lambda folder: loaded.append(folder) or loaded_pipeline[0])
    monkeypatch.setitem(sys.modules, "pyannote.audio", types.SimpleNamespace(Pipeline=hub))
    loaded_pipeline = [pipeline]
    with pytest.raises(ConfigError, match="has no config.yaml"):  # refused before pyannote sees the folder
        pyannote_diarizer.load_pipeline(f"pyannote:{tmp_path}")
    assert loaded == []
    (tmp_path / "config.yaml").write_text("pipeline: {}\n")
    assert pyannote_diarizer.load_pipeline(f"pyannote:{tmp_path}") is pipeline and loaded == [tmp_path]
    loaded_pipeline[0] = None  # what pyannote 3 returns for a folder it cannot use
    with pytest.raises(ConfigError, match="holds no pyannote pipeline"):
        pyannote_diarizer.load_pipeline(f"pyannote:{tmp_path}")


def _news(tmp_path, name="news.wav"):
    from tests.prep.conversation import speak

    wav = np.concatenate([np.zeros(RATE // 2, dtype=np.float32), speak("الجو جميل اليوم في المدينة", "A"),
                          np.zeros(RATE // 2, dtype=np.float32)])
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wav, RATE)
    return path, soundfile.read(path, dtype="float32")[0]  # as written (16-bit)


def test_separation_segments_the_vocals_stem_of_a_saved_demucs(conversations, tmp_path, one_torch_thread):
    pytest.importorskip("demucs")
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    path, wav = _news(tmp_path)
    folder = save_demucs(tmp_path / "demucs", RATE)
    summary = segment_recordings(SegmentConfig(inputs=(str(path),), out=str(tmp_path / "out"),
                                               separate=f"demucs:{folder}"))
    stem = tmp_path / "out" / "separated" / "news.wav"
    vocals, rate = soundfile.read(stem, dtype="float32")
    model = get_model("tiny", repo=folder).eval()
    mix = torch.from_numpy(wav)[None, None].expand(1, model.audio_channels, -1)
    with torch.no_grad():  # shifts=0: a random shift would make the stem differ from run to run
        expected = apply_model(model, mix, shifts=0)[0, model.sources.index("vocals")].mean(0).numpy()
    assert rate == RATE and len(vocals) == len(wav) and np.abs(expected).max() > 1e-4
    np.testing.assert_allclose(vocals, expected, rtol=0, atol=1e-5)  # the vocals stem, not the mix or another
    (row,) = summary["per_file"]
    assert row["source"] == str(path) and row["seconds"] == len(wav) / RATE
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(row["seconds"], abs=1 / RATE)
    with pytest.raises(ConfigError, match="--separate"):
        SegmentConfig(inputs=(), out="", separate=f"demucs:{tmp_path / 'nowhere'}")


def test_separation_cuts_the_stem_and_names_the_speaker_from_the_recording(tmp_path, one_torch_thread):
    """A pass-through separator (its vocals stem is the recording) so the stem has speech to cut: segments
    come from the stem, and --speaker-pattern reads the recording's path, not the stem's."""
    pytest.importorskip("demucs")
    from tests.prep.tiny_whisper import save_tiny_whisper

    path, wav = _news(tmp_path / "in" / "anchor")
    demucs = save_demucs(tmp_path / "demucs", RATE, passthrough=True)
    summary = segment_recordings(SegmentConfig(
        inputs=(str(tmp_path / "in"),), out=str(tmp_path / "out"), separate=f"demucs:{demucs}",
        asr=str(save_tiny_whisper(tmp_path / "whisper")), min_asr_confidence=0.0,
        speaker_pattern=r"/in/(?P<speaker>[^/]+)/news\.wav$"))  # the stem: /separated/anchor/
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert rows and summary["kept_segments"] == len(rows) and {r["speaker"] for r in rows} == {"anchor"}
    stem = tmp_path / "out" / "separated" / "anchor" / "news.wav"
    segments = [json.loads(line) for line in (tmp_path / "out" / "segments.jsonl").read_text().splitlines()]
    assert segments and all(s["source"] == str(stem) for s in segments)  # cut from the stem
    np.testing.assert_allclose(soundfile.read(stem, dtype="float32")[0], wav, atol=1e-6)


def test_separation_of_an_undecodable_file_is_counted_and_leaves_no_stem(monkeypatch, tmp_path, one_torch_thread):
    """Unreadable: `failed_to_decode` as without --separate. Failing part way (after the first 1-s block):
    the whole file is `failed_to_decode` (neither the unseparated recording nor a partial stem is cut)."""
    pytest.importorskip("demucs")
    from higgs_ds.prep import separate

    monkeypatch.setattr(separate, "BLOCK_SECONDS", 1)
    path, wav = _news(tmp_path, "whole.flac")
    data = path.read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "cut.flac").write_bytes(data[:int(len(data) * 0.6)])  # the header still says the full length
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    summary = segment_recordings(SegmentConfig(inputs=(str(folder),), out=str(tmp_path / "out"),
                                               separate=f"demucs:{save_demucs(tmp_path / 'demucs', RATE)}"))
    by_file = {row["source"].rsplit("/", 1)[-1]: row for row in summary["per_file"]}
    assert by_file["broken.wav"]["dropped"] == {"failed_to_decode": 0.0}
    assert by_file["cut.flac"]["dropped"] == {"failed_to_decode": len(wav) / RATE}
    assert by_file["cut.flac"]["kept"] == 0 and summary["kept_segments"] == 0
    assert (tmp_path / "out" / "segments.jsonl").read_text() == ""
    assert not list((tmp_path / "out").glob("separated/*"))


def test_a_failure_of_the_separator_itself_is_an_error_naming_the_file(monkeypatch, tmp_path, one_torch_thread):
    """The model failing on the second block (as a GPU out of memory would): an error naming the recording,
    not a silent fall back to the unseparated audio, and the partial stem is removed."""
    pytest.importorskip("demucs")
    import demucs.apply
    import torch

    from higgs_ds.prep import separate

    path, _ = _news(tmp_path / "in")
    real, calls = demucs.apply.apply_model, []

    def fails_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(separate, "BLOCK_SECONDS", 1)
    monkeypatch.setattr(demucs.apply, "apply_model", fails_second)
    with pytest.raises(RuntimeError, match=rf"--separate failed on {re.escape(str(path))} \(OutOfMemoryError"):
        segment_recordings(SegmentConfig(inputs=(str(path),), out=str(tmp_path / "out"),
                                         separate=f"demucs:{save_demucs(tmp_path / 'demucs', RATE)}"))
    assert len(calls) == 2 and not (tmp_path / "out" / "separated" / "news.wav").exists()
