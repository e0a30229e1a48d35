"""A long synthetic recording and a measured `segment` run on it, shared by the bounded-memory test
(tests/prep/test_segment_long.py) and the 2-hour benchmark (tests/benchmarks/test_segment_memory.py).

The recording is mono 16 kHz: faint noise with one espeak-ng sentence every `every` seconds, written a
minute at a time, so the test process never holds it either. The run happens in a fresh process
(`python -m tests.prep.long_recording`), which first segments a short file (models loaded, buffers
allocated), then measures the long one: its peak resident set above what was live before
(`peak_memory_mib`: VmHWM reset through /proc/self/clear_refs) and its wall time.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.quality.signal import resample

RATE = 16_000
SENTENCE = "ذهب الولد إلى المدرسة في الصباح الباكر"


def spoken_sentence(folder: Path, text: str = SENTENCE) -> np.ndarray:
    """`text` spoken by espeak-ng's Arabic voice, at 16 kHz, silence trimmed."""
    path = folder / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "ar", "-w", str(path), text], check=True)
    wav, rate = soundfile.read(path, dtype="float32")
    wav = resample(wav, rate, RATE)
    loud = np.flatnonzero(np.abs(wav) > 0.02 * np.abs(wav).max())
    return wav[loud[0]:loud[-1] + 1]


def write_recording(path: Path, seconds: int, sentence: np.ndarray, every: float = 20.0) -> int:
    """Writes the recording; returns how many sentences it holds."""
    rng, period, count = np.random.default_rng(0), int(every * RATE), 0
    with soundfile.SoundFile(path, "w", RATE, 1, "PCM_16") as f:
        for first in range(0, seconds * RATE, 60 * RATE):
            block = (rng.standard_normal(min(60 * RATE, seconds * RATE - first)) * 1e-3).astype(np.float32)
            for at in range(-first % period, len(block) - len(sentence), period):
                block[at:at + len(sentence)] += sentence
                count += 1
            f.write(block)
    return count


def measure_segment(recording: Path, warm_up: Path, out: Path, **options) -> dict:
    """{"peak_mib", "seconds", "summary", "stderr"} of `segment_recordings` on `recording` in a fresh process."""
    done = subprocess.run([sys.executable, "-m", "tests.prep.long_recording", str(recording), str(warm_up), str(out),
                           json.dumps(options)], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    if done.returncode:
        raise RuntimeError(done.stderr)
    return {**json.loads(done.stdout), "stderr": done.stderr}


def _main(recording: str, warm_up: str, out: str, options: str) -> None:
    from higgs_ds.prep.segment import SegmentConfig, segment_recordings
    from tests.benchmarks.kernel_bench_utils import peak_memory_mib

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    segment_recordings(SegmentConfig(inputs=(warm_up,), out=f"{out}-warm-up", **json.loads(options)))  # beside out
    result = {}

    def run():
        start = time.perf_counter()
        result["summary"] = segment_recordings(SegmentConfig(inputs=(recording,), out=out, **json.loads(options)))
        result["seconds"] = time.perf_counter() - start

    result["peak_mib"] = peak_memory_mib(run, "cpu")
    print(json.dumps(result))


if __name__ == "__main__":
    _main(*sys.argv[1:])
