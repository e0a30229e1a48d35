"""Synthetic conversations for the diarization tests and benchmark: espeak-ng Arabic voices that the GE2E
encoder tells apart (cosine similarity of utterances 0.55-0.66 across these voices, 0.92-0.94 within one),
turns separated by pauses, and optionally one pair of turns that overlap (the two voices mixed)."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.quality.signal import resample

RATE = 16_000
# a male voice, a female voice lowered in pitch, a second male voice raised in pitch
VOICES = {"A": ("ar+klatt", None), "B": ("ar+f4", 5), "C": ("ar+m3", 99)}
SENTENCES = ["ذهب الولد إلى المدرسة في الصباح الباكر", "الجو جميل اليوم في المدينة",
             "قرأت كتابا مفيدا عن تاريخ العرب", "شكرا لكم على حسن الاستماع",
             "سافرنا إلى البحر في الصيف الماضي", "هل تحب القهوة أم الشاي في المساء"]


def speak(text: str, voice: str) -> np.ndarray:
    """`text` in one of `VOICES`, at 16 kHz, silence trimmed, peak 0.5."""
    name, pitch = VOICES[voice]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "turn.wav"
        subprocess.run(["espeak-ng", "-v", name, *(["-p", str(pitch)] if pitch is not None else []), "-w",
                        str(path), text], check=True)
        wav, rate = soundfile.read(path, dtype="float32")
    wav = resample(wav, rate, RATE)
    loud = np.flatnonzero(np.abs(wav) > 0.02 * np.abs(wav).max())
    wav = wav[loud[0]:loud[-1] + 1]
    return 0.5 * wav / np.abs(wav).max()


@dataclass
class Conversation:
    path: Path
    turns: list[tuple[float, float, str]]  # (start, end, voice) in seconds
    overlap: tuple[float, float] | None  # where two voices speak at once

    @property
    def seconds(self) -> float:
        return soundfile.info(str(self.path)).frames / RATE


def write_conversation(path: Path, order: str, seed: int = 0, overlap_at: int | None = None,
                       overlap_seconds: float = 1.2, quick_at: int | None = None) -> Conversation:
    """Turns by the voices in `order` (e.g. "ABCAB..."), each a sentence, with 0.5-1.0 s pauses and faint
    noise; turn `overlap_at` starts `overlap_seconds` before the previous turn ends, turn `quick_at` 0.1 s
    after it (too short a pause for VAD to cut: only the speaker embeddings tell the turns apart)."""
    rng = np.random.default_rng(seed)
    clips, turns, at = [], [], 0.6
    for index, voice in enumerate(order):
        wav = speak(SENTENCES[(index * 5 + seed) % len(SENTENCES)], voice)
        if index == overlap_at:
            at = turns[-1][1] - overlap_seconds
        if index == quick_at:
            at = turns[-1][1] + 0.1
        clips.append((int(at * RATE), wav))
        turns.append((at, at + len(wav) / RATE, voice))
        at = turns[-1][1] + rng.uniform(0.5, 1.0)
    audio = (rng.standard_normal(int((at + 0.5) * RATE)) * 1e-3).astype(np.float32)
    for start, wav in clips:
        audio[start:start + len(wav)] += wav
    soundfile.write(path, audio, RATE)
    overlap = None
    if overlap_at is not None:
        overlap = (turns[overlap_at][0], turns[overlap_at - 1][1])
    return Conversation(path, turns, overlap)
