"""Streaming VAD gives what silero gives on the whole file at once: the same probabilities whatever the
pieces the audio arrives in, and the same speech spans whatever the pieces the probabilities arrive in;
a stretch with no long pause is still cut into bounded regions that tile the stream."""

import shutil

import numpy as np
import pytest
from silero_vad import get_speech_timestamps_from_probs, load_silero_vad

from higgs_ds.prep.vad_stream import VAD_RATE, WINDOW, SpeechRegions, VadProbabilities

SETTINGS = dict(threshold=0.5, merge_gap=0.3, pad=0.1, max_speech=5.0, join_gap=1.0)


def _probs(seed: int, windows: int, longest_pause: float = 3.0) -> np.ndarray:
    """Speech bursts (0.1-12 s, over max_speech too) between pauses of 0.03 s up to `longest_pause`, with
    wavering values (some between silero's two thresholds)."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < windows:
        speech = int(rng.uniform(0.1, 12) * VAD_RATE / WINDOW)
        pause = int(rng.uniform(0.03, longest_pause) * VAD_RATE / WINDOW)
        out += list(rng.uniform(0.4, 1.0, speech)) + list(rng.uniform(0.0, 0.36, pause))
    return np.array(out[:windows], dtype=np.float32)


def _whole(probs: np.ndarray, total: int) -> list[tuple[int, int]]:
    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), threshold=0.5, sampling_rate=VAD_RATE, min_speech_duration_ms=100, max_speech_duration_s=5.0,
        min_silence_duration_ms=300, speech_pad_ms=100, audio_length_samples=total)
    return [(s["start"], s["end"]) for s in stamps]


def _streamed(probs: np.ndarray, total: int, seed: int, **kwargs):
    regions, rng, first, out = SpeechRegions(**SETTINGS, **kwargs), np.random.default_rng(seed), 0, []
    while first < len(probs):
        piece = int(rng.integers(1, 400))
        out += regions.push(probs[first:first + piece])
        first += piece
    return out + regions.finish(total)


@pytest.mark.parametrize("seed", range(6))
def test_spans_are_the_whole_files_whatever_the_pieces(seed):
    probs = _probs(seed, 40_000)  # 21 min
    total = len(probs) * WINDOW - 100  # a partial last window, as at the end of a file
    regions = _streamed(probs, total, seed)
    assert len(regions) > 20  # cut at the long pauses, not held whole
    assert [(r.start, r.end) for r in regions] == list(zip([0] + [r.end for r in regions[:-1]],
                                                           [r.end for r in regions], strict=True))
    assert regions[-1].end == total
    assert [span for r in regions for span in r.spans] == _whole(probs, total)
    spoken = [r for r in regions if r.spans]  # across a cut, spans are too far apart for segment to join them
    assert all(b.spans[0][0] - a.spans[-1][1] > SETTINGS["join_gap"] * VAD_RATE
               for a, b in zip(spoken, spoken[1:], strict=False))


def test_a_stretch_without_a_long_pause_is_cut_at_its_longest_pause():
    probs = _probs(7, 20_000, longest_pause=0.5)  # no pause long enough to cut at safely
    regions = _streamed(probs, len(probs) * WINDOW, 7, max_region_seconds=60)
    longest = 60 * VAD_RATE
    assert len(regions) >= 10 and all(r.end - r.start <= longest for r in regions)
    assert regions[0].start == 0 and regions[-1].end == len(probs) * WINDOW
    assert all(a.end == b.start for a, b in zip(regions, regions[1:], strict=False))
    spans = [span for r in regions for span in r.spans]
    assert all(r.start <= a < b <= r.end for r in regions for a, b in r.spans)
    assert all(b <= c for (_, b), (c, _) in zip(spans, spans[1:], strict=False))  # never overlapping
    for region in regions[:-1]:  # each cut at the middle of the longest quiet run before the limit
        assert probs[region.end // WINDOW - 1] < 0.35 or probs[region.end // WINDOW] < 0.35


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup installs it)")
def test_probabilities_are_silero_s_whatever_the_pieces(tmp_path):
    from tests.prep.long_recording import spoken_sentence

    speech = spoken_sentence(tmp_path)
    audio = np.concatenate([np.zeros(7_000, np.float32), speech, np.zeros(5_123, np.float32), speech])
    whole = load_silero_vad(sequence=True).audio_forward(audio)
    vad, rng, first, pieces = VadProbabilities(), np.random.default_rng(0), 0, []
    for _ in range(2):  # a second stream after reset() starts afresh
        vad.reset()
        first, pieces = 0, []
        while first < len(audio):
            size = int(rng.integers(1, 20_000))
            pieces.append(vad(audio[first:first + size]))
            first += size
        streamed = np.concatenate(pieces + [vad.flush()])
        assert streamed.shape == whole.shape and np.abs(streamed - whole).max() < 1e-6
    assert whole.max() > 0.9 and whole.min() < 0.1  # speech and silence both there
