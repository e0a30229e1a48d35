"""The optional back ends of `segment`: a pyannote-audio pipeline (an optional extra: a stub object stands in
for the external pipeline, and what is tested is our conversion of its turns into pieces, overlaps and
speakers) and Demucs source separation (a tiny random HTDemucs saved in the folder layout
`demucs.pretrained.get_model(name, repo=FOLDER)` reads, run through the real path)."""

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile

from higgs_ds.errors import ConfigError
from higgs_ds.prep import pyannote_diarizer
from higgs_ds.prep.diarize import OVERLAP, UNCERTAIN
from higgs_ds.prep.pyannote_diarizer import pieces_from_turns, speaker_turns
from higgs_ds.prep.segment import SegmentConfig, segment_recordings

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
    monkeypatch.delenv("PYANNOTE_METRICS_ENABLED", raising=False)
    try:
        import pyannote.audio  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"\[pyannote\]"):
            pyannote_diarizer.load_pipeline(f"pyannote:{tmp_path}")
    else:
        with pytest.raises(Exception):  # noqa: B017 (an empty folder: whatever pyannote raises)
            pyannote_diarizer.load_pipeline(f"pyannote:{tmp_path}")
    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "false"


def _save_tiny_demucs(folder):
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    kwargs = dict(sources=["drums", "bass", "other", "vocals"], channels=4, depth=2, nfft=256, t_layers=1,
                  t_heads=1, dconv_comp=2, samplerate=RATE, segment=1)
    model = HTDemucs(**kwargs)
    folder.mkdir()
    torch.save({"klass": HTDemucs, "args": (), "kwargs": kwargs, "state": model.state_dict()}, folder / "tiny.th")
    return folder


def test_separation_segments_the_vocals_stem_of_a_saved_demucs(conversations, tmp_path):
    pytest.importorskip("demucs")
    import torch

    from tests.prep.conversation import speak

    wav = np.concatenate([np.zeros(RATE // 2, dtype=np.float32), speak("الجو جميل اليوم في المدينة", "A"),
                          np.zeros(RATE // 2, dtype=np.float32)])
    soundfile.write(tmp_path / "news.wav", wav, RATE)
    folder = _save_tiny_demucs(tmp_path / "demucs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a busy machine
    try:
        summary = segment_recordings(SegmentConfig(inputs=(str(tmp_path / "news.wav"),),
                                                   out=str(tmp_path / "out"), separate=f"demucs:{folder}"))
    finally:
        torch.set_num_threads(threads)
    stem = tmp_path / "out" / "separated" / "news.wav"
    vocals, rate = soundfile.read(stem, dtype="float32")
    assert rate == RATE and len(vocals) == len(wav) and np.abs(vocals).max() > 0 and not np.allclose(vocals, wav)
    (row,) = summary["per_file"]
    assert row["source"] == str(tmp_path / "news.wav") and row["seconds"] == len(wav) / RATE
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(row["seconds"], abs=1 / RATE)
    segments = [json.loads(line) for line in (tmp_path / "out" / "segments.jsonl").read_text().splitlines()]
    assert all(s["source"] == str(stem) for s in segments)  # cut from the stem
    with pytest.raises(ConfigError, match="--separate"):
        SegmentConfig(inputs=(), out="", separate=f"demucs:{tmp_path / 'nowhere'}")
