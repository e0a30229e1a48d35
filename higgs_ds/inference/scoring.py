"""Hooks for seed-tts-eval style metrics: intelligibility (WER/CER from an ASR transcript of the
generated audio) and speaker similarity (cosine of speaker embeddings of the generated and the
reference audio).

No ASR or speaker model can be downloaded on the build machines, so none ships here: plug in any
callables with the signatures below (see README.md, "Intelligibility and speaker similarity", for Whisper and a WavLM
speaker encoder). Text is normalised the same way on both sides before the edit distance: Arabic
normalisation without diacritics (ASR models rarely emit tashkeel) and without punctuation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from higgs_ds.data.text import ArabicTextConfig, normalize_arabic

Transcriber = Callable[[np.ndarray, int], str]  # (mono waveform, sample rate) -> transcript
SpeakerEmbedder = Callable[[np.ndarray, int], np.ndarray]  # (mono waveform, sample rate) -> [D] embedding

_PUNCTUATION = re.compile(r"[^\w\s]", flags=re.UNICODE)
_ASR_TEXT = ArabicTextConfig(keep_diacritics=False, unify_punctuation=True)


def normalize_for_asr(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", normalize_arabic(text, _ASR_TEXT)).split())


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two token sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_counts(reference: str, hypothesis: str) -> dict[str, int]:
    """Word and character edit counts and reference lengths, after `normalize_for_asr`."""
    ref, hyp = normalize_for_asr(reference), normalize_for_asr(hypothesis)
    ref_chars, hyp_chars = list(ref.replace(" ", "")), list(hyp.replace(" ", ""))
    return {"word_errors": edit_distance(ref.split(), hyp.split()), "words": len(ref.split()),
            "char_errors": edit_distance(ref_chars, hyp_chars), "chars": len(ref_chars)}


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


@dataclass
class SpeechScorer:
    """Scores generated utterances; either hook may be None (its metrics are then absent).

    Corpus-level WER/CER are total edits over total reference words/characters (as seed-tts-eval's
    aggregate), and SIM is the mean cosine similarity."""

    transcriber: Transcriber | None = None
    speaker_embedder: SpeakerEmbedder | None = None

    def score(self, wavs: list[np.ndarray], sample_rate: int, texts: list[str],
              reference_wavs: list[np.ndarray | None] | None = None) -> dict[str, float]:
        if len(wavs) != len(texts):
            raise ValueError(f"SpeechScorer.score: {len(wavs)} waveforms but {len(texts)} texts")
        out: dict[str, float] = {}
        if self.transcriber is not None:
            totals = {"word_errors": 0, "words": 0, "char_errors": 0, "chars": 0}
            for wav, text in zip(wavs, texts, strict=True):
                for key, value in error_counts(text, self.transcriber(wav, sample_rate)).items():
                    totals[key] += value
            out["wer"] = totals["word_errors"] / max(totals["words"], 1)
            out["cer"] = totals["char_errors"] / max(totals["chars"], 1)
        if self.speaker_embedder is not None and reference_wavs is not None:
            sims = [cosine_similarity(self.speaker_embedder(w, sample_rate), self.speaker_embedder(r, sample_rate))
                    for w, r in zip(wavs, reference_wavs, strict=True) if r is not None and len(w) and len(r)]
            if sims:
                out["sim"] = float(np.mean(sims))
        return out
