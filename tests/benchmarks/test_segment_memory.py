"""`segment` on a 2-hour recording (mono 16 kHz, an espeak-ng sentence every 20 s): wall time, and peak
memory above what was live before, against the file read whole (float32, the least a whole read takes),
measured in one run. docs/data.md quotes the figures. Runs only with `pytest --benchmark`.
"""

from __future__ import annotations

import shutil

import pytest
import soundfile

from tests.benchmarks.kernel_bench_utils import peak_memory_mib
from tests.prep.long_recording import RATE, measure_segment, spoken_sentence, write_recording

pytestmark = [pytest.mark.benchmark,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup installs it)")]
HOURS = 2


def test_segment_two_hours_in_bounded_memory(request, tmp_path):
    sentence = spoken_sentence(tmp_path)
    sentences = write_recording(tmp_path / "long.wav", HOURS * 3600, sentence)
    write_recording(tmp_path / "warm.wav", 30, sentence)
    result = measure_segment(tmp_path / "long.wav", tmp_path / "warm.wav", tmp_path / "out")
    whole_mib = peak_memory_mib(lambda: soundfile.read(tmp_path / "long.wav", dtype="float32"), "cpu")

    summary, seconds = result["summary"], result["seconds"]
    lines = [f"### segment, {HOURS} h mono {RATE} Hz, {sentences} sentences", "",
             "| | wall time (s) | x real time | peak memory above start (MiB) | / the file read whole |",
             "|---|---|---|---|---|",
             f"| segment (streamed) | {seconds:.1f} | {HOURS * 3600 / seconds:.0f} | {result['peak_mib']:.0f} | "
             f"{result['peak_mib'] / whole_mib:.3f} |",
             f"| the file read whole (float32) | | | {whole_mib:.0f} | 1 |"]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    (reporter.write_line if reporter else print)("\n" + "\n".join(lines) + "\n")

    (row,) = summary["per_file"]
    assert summary["kept_segments"] == sentences
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(HOURS * 3600, abs=1 / RATE)
    assert result["peak_mib"] < whole_mib / 10
