"""Synthetic multi-speaker recordings, synthesised once per test session (espeak-ng), and their diarized
segment folders, shared by the diarization and speaker-linking tests."""

import shutil

import pytest

from higgs_ds.prep.segment import SegmentConfig, segment_recordings
from tests.prep.conversation import write_conversation


@pytest.fixture(scope="session")
def conversations(tmp_path_factory):
    """Two recordings in one folder: a 12-turn conversation of voices A, B, C with turns 6 and 7 overlapped
    and turn 4 following turn 3 after 0.1 s (talks/a.wav), and a 5-turn one of voices A and C
    (talks/b.wav): A and C recur across files."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (make setup installs it)")
    folder = tmp_path_factory.mktemp("voices") / "talks"
    folder.mkdir()
    first = write_conversation(folder / "a.wav", "ABCABCBACBCA", seed=0, overlap_at=7, quick_at=4)
    second = write_conversation(folder / "b.wav", "ACACA", seed=1)
    return folder, first, second


@pytest.fixture(scope="session")
def diarized(conversations, tmp_path_factory):
    """`segment --speakers diarize` over the folder as two parts (one file each), with a tiny Whisper so
    manifests are written: (part folders, summaries)."""
    from tests.prep.tiny_whisper import save_tiny_whisper

    folder, _, _ = conversations
    root = tmp_path_factory.mktemp("diarized")
    whisper = save_tiny_whisper(root / "whisper")
    parts, summaries = [], []
    for index in range(2):
        out = root / "parts" / str(index)
        summaries.append(segment_recordings(SegmentConfig(
            inputs=(str(folder),), out=str(out), asr=str(whisper), min_asr_confidence=0.0, speakers="diarize",
            part=(index, 2))))
        parts.append(out)
    return parts, summaries
