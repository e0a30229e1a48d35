"""One scorer for generated speech, used by the training-time audio eval, `launch/generate.py --score`
and `launch/evaluate.py`.

Per utterance (generated wav, its text, optionally a reference recording of the same text in the
target voice) it computes whichever metrics its hooks allow:

- `wer`, `cer`: edit rates of an ASR transcript against the text (`jiwer`), after the same Arabic
  evaluation normalisation on both sides (`data.text.normalize_for_eval`: no diacritics, since ASR
  models rarely emit tashkeel; no punctuation; alef/hamza forms, ta marbuta, alef maqsura and digits
  unified);
- `sim` (and `sim_<name>` for extra embedders): cosine of speaker embeddings, generated vs reference;
- `mcd`: mel-cepstral distortion with DTW against the reference (dB, lower is better), and `mcd_sl`,
  the same times the length ratio (DTW alone forgives an output many times the reference's length);
- `dnsmos_*`: DNSMOS quality (no reference needed).

`build_scorer(ScorerConfig(...))` assembles the offline models (`higgs_ds.quality.models`); any
callables with the hook signatures below also fit (tests use stubs). Corpus-level WER/CER are total
edits over total reference words/characters (seed-tts-eval's aggregate); other metrics are means.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from higgs_ds.data.text import normalize_for_eval

Transcriber = Callable[[np.ndarray, int], str]  # (mono waveform, sample rate) -> transcript
SpeakerEmbedder = Callable[[np.ndarray, int], np.ndarray]  # (mono waveform, sample rate) -> [D] embedding
QualityScorer = Callable[[np.ndarray, int], dict[str, float]]  # (mono waveform, sample rate) -> named scores

COUNT_KEYS = ("word_errors", "words", "char_errors", "chars")  # per-utterance counts behind corpus WER/CER
LOWER_IS_BETTER = ("wer", "cer", "mcd", "mcd_sl")



def _edits(ref: list[str], hyp: list[str]) -> int:
    import jiwer

    if not ref:
        return len(hyp)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp) if hyp else "")
    return out.substitutions + out.deletions + out.insertions


def error_counts(reference: str, hypothesis: str) -> dict[str, int]:
    """Word and character edit counts and reference lengths, after `normalize_for_eval`."""
    ref, hyp = normalize_for_eval(reference), normalize_for_eval(hypothesis)
    ref_chars, hyp_chars = list(ref.replace(" ", "")), list(hyp.replace(" ", ""))
    return {"word_errors": _edits(ref.split(), hyp.split()), "words": len(ref.split()),
            "char_errors": _edits(ref_chars, hyp_chars), "chars": len(ref_chars)}


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


@dataclass
class SpeechScorer:
    """Scores generated utterances; every hook may be None (its metrics are then absent)."""

    transcriber: Transcriber | None = None
    speaker_embedder: SpeakerEmbedder | None = None  # -> "sim"
    extra_speaker_embedders: dict[str, SpeakerEmbedder] = field(default_factory=dict)  # name -> "sim_<name>"
    quality: QualityScorer | None = None
    mcd: bool = False

    def _embedders(self) -> dict[str, SpeakerEmbedder]:
        named = {"sim": self.speaker_embedder} if self.speaker_embedder is not None else {}
        return named | {f"sim_{k}": v for k, v in self.extra_speaker_embedders.items()}

    def score_one(self, wav: np.ndarray, sample_rate: int, text: str, reference: np.ndarray | None = None,
                  reference_rate: int | None = None) -> dict[str, float]:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        reference_rate = reference_rate or sample_rate
        has_ref = reference is not None and len(reference) > 0
        out: dict[str, float] = {}
        if len(wav) == 0:
            return out  # nothing generated: no metric is defined (counted by the caller as missing)
        if self.transcriber is not None:
            counts = error_counts(text, self.transcriber(wav, sample_rate))
            out.update(counts, wer=counts["word_errors"] / max(counts["words"], 1),
                       cer=counts["char_errors"] / max(counts["chars"], 1))
        if has_ref:
            for name, embed in self._embedders().items():
                out[name] = cosine_similarity(embed(wav, sample_rate), embed(reference, reference_rate))
            if self.mcd:
                from higgs_ds.quality.signal import mcd_with_length_ratio

                out["mcd"], ratio = mcd_with_length_ratio(wav, sample_rate, reference, reference_rate)
                out["mcd_sl"] = out["mcd"] * ratio
        if self.quality is not None:
            out.update(self.quality(wav, sample_rate))
        return out

    def similarity_to_other_voices(self, wavs: list[np.ndarray], sample_rate: int, references: list[np.ndarray],
                                   speakers: list[str | None]) -> float | None:
        """Mean speaker similarity of each generation to the references of the *other* speakers: the baseline
        that its similarity to its own reference voice ("sim") must beat. None without an embedder or with
        fewer than two speakers."""
        if self.speaker_embedder is None or len(set(speakers)) < 2:
            return None
        gen = [self.speaker_embedder(np.asarray(w, dtype=np.float32), sample_rate) for w in wavs]
        ref = [self.speaker_embedder(np.asarray(r, dtype=np.float32), sample_rate) for r in references]
        pairs = [cosine_similarity(g, r) for i, g in enumerate(gen) for j, r in enumerate(ref)
                 if speakers[i] != speakers[j] and len(wavs[i])]
        return float(np.mean(pairs)) if pairs else None

    def score_each(self, wavs: list[np.ndarray], sample_rate: int, texts: list[str],
                   reference_wavs: list[np.ndarray | None] | None = None,
                   reference_rate: int | None = None) -> list[dict[str, float]]:
        if len(wavs) != len(texts) or (reference_wavs is not None and len(reference_wavs) != len(wavs)):
            raise ValueError(f"SpeechScorer: {len(wavs)} waveforms, {len(texts)} texts and "
                             f"{len(reference_wavs) if reference_wavs is not None else 'no'} references")
        refs = reference_wavs if reference_wavs is not None else [None] * len(wavs)
        return [self.score_one(w, sample_rate, t, r, reference_rate) for w, t, r in zip(wavs, texts, refs, strict=True)]

    def score(self, wavs: list[np.ndarray], sample_rate: int, texts: list[str],
              reference_wavs: list[np.ndarray | None] | None = None,
              reference_rate: int | None = None) -> dict[str, float]:
        """Corpus-level scores: WER/CER from total counts, every other metric as a mean."""
        return aggregate(self.score_each(wavs, sample_rate, texts, reference_wavs, reference_rate))


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: v["mean"] for k, v in summarize(rows).items()}
    totals = {k: sum(r.get(k, 0) for r in rows) for k in COUNT_KEYS}
    if any("wer" in r for r in rows):
        out["wer"] = totals["word_errors"] / max(totals["words"], 1)
        out["cer"] = totals["char_errors"] / max(totals["chars"], 1)
    return out


def summarize(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: mean over the utterances that have it, its 95% t-interval half-width (NaN below 2
    values) and the count."""
    from scipy.stats import t

    names = sorted({k for r in rows for k in r} - set(COUNT_KEYS))
    out = {}
    for name in names:
        values = np.array([r[name] for r in rows if name in r and math.isfinite(r[name])], dtype=np.float64)
        n = len(values)
        half = float(t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        out[name] = {"mean": float(values.mean()) if n else math.nan, "ci95": half, "n": n}
    return out


@dataclass(frozen=True)
class ScorerConfig:
    """Which offline metrics to compute. Whisper and WavLM need local folders (nothing is downloaded)."""

    resemblyzer: bool = True  # "sim"
    dnsmos: bool = True  # "dnsmos_*"
    mcd: bool = True  # "mcd" (needs references)
    whisper: str | None = None  # local WhisperForConditionalGeneration folder -> "wer", "cer"
    wavlm: str | None = None  # local WavLMForXVector folder -> "sim_wavlm"
    language: str = "ar"  # Whisper decoding language
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("whisper", "wavlm"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_dir():
                raise FileNotFoundError(f"scorer: {name} folder {path} does not exist (copy the model there first)")


def build_scorer(cfg: ScorerConfig) -> SpeechScorer:
    from higgs_ds.quality import models

    return SpeechScorer(
        transcriber=models.WhisperTranscriber(cfg.whisper, cfg.device, cfg.language) if cfg.whisper else None,
        speaker_embedder=models.load_speaker_encoder("resemblyzer", cfg.device) if cfg.resemblyzer else None,
        extra_speaker_embedders={"wavlm": models.load_speaker_encoder(f"wavlm:{cfg.wavlm}", cfg.device)}
        if cfg.wavlm else {},
        quality=models.DnsMos() if cfg.dnsmos else None, mcd=cfg.mcd)


def _finite_or_none(x):
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_scores(path: str | Path, result: dict) -> None:
    """JSON with NaN (an interval from one value) written as null."""
    Path(path).write_text(json.dumps(_finite_or_none(result), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def format_table(summary: dict[str, dict[str, float]], corpus: dict[str, float] | None = None) -> str:
    """A plain-text table: metric, mean, 95% interval, count (lower-is-better metrics marked)."""
    lines = [f"{'metric':<14}{'mean':>10}{'± 95%':>10}{'n':>6}"]
    for name, s in summary.items():
        mark = " (lower is better)" if name in LOWER_IS_BETTER else ""
        lines.append(f"{name:<14}{s['mean']:>10.4f}{s['ci95']:>10.4f}{s['n']:>6}{mark}")
    for name, value in (corpus or {}).items():
        lines.append(f"{name + ' (corpus)':<14}{value:>10.4f}")
    return "\n".join(lines)
