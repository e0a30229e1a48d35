"""`segment` streams a long recording: its peak memory stays a fraction of the file loaded whole, it logs
its progress, and every sample is still kept or dropped with a reason. 20 minutes here (about 8 s); the
2-hour figure comes from tests/benchmarks/test_segment_memory.py and is quoted in docs/data.md."""

import shutil

import pytest
import soundfile

from tests.prep.long_recording import RATE, measure_segment, spoken_sentence, write_recording

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup installs it)")]
MINUTES = 20


def test_a_long_recording_is_segmented_in_bounded_memory(tmp_path):
    sentence = spoken_sentence(tmp_path)
    sentences = write_recording(tmp_path / "long.wav", MINUTES * 60, sentence)
    write_recording(tmp_path / "warm.wav", 30, sentence)
    result = measure_segment(tmp_path / "long.wav", tmp_path / "warm.wav", tmp_path / "out", progress_minutes=5)

    whole_mib = soundfile.info(str(tmp_path / "long.wav")).frames * 4 / 2**20  # float32 mono at 16 kHz: 73 MiB
    assert result["peak_mib"] < whole_mib / 4, result["peak_mib"]
    summary = result["summary"]
    assert summary["kept_segments"] == sentences == 60
    (row,) = summary["per_file"]
    assert row["seconds"] == MINUTES * 60
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(row["seconds"], abs=1 / RATE)
    assert row["kept"] == pytest.approx(sentences * len(sentence) / RATE, rel=0.1)
    progress = [line for line in result["stderr"].splitlines() if "min read" in line]
    assert [line.split(": ", 2)[-1].split(",")[0] for line in progress] == [f"{m} of 20 min read"
                                                                            for m in (5, 10, 15, 20)]
    assert len(list((tmp_path / "out" / "wavs" / "long").iterdir())) == sentences
