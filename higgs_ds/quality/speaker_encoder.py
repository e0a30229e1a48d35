"""Speaker embeddings: the one interface that scoring (speaker similarity), diarization (`prepare_data
segment --speakers diarize`) and speaker linking (`prepare_data link-speakers`) share.

- `ResemblyzerEmbedder` (spec `resemblyzer`, the default): resemblyzer's GE2E encoder, whose trained weights
  ship in its wheel, so it needs no folder;
- `WavLMEmbedder` (spec `wavlm:PATH`): the x-vector head of a local `WavLMForXVector` folder (e.g.
  microsoft/wavlm-base-plus-sv copied by hand), the model seed-tts-eval scores SIM with.

Both are callables `(mono waveform, sample rate) -> [D] embedding` (the scorer's hook type) and give
`windows(...)`: L2-normalised embeddings of `WINDOW_SECONDS` windows every `STEP_SECONDS`, with their
sample bounds, which is what reveals a change of speaker inside a stretch of speech.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from higgs_ds.quality.signal import resample

MODEL_RATE = 16_000  # every speaker model here reads 16 kHz
DEFAULT_ENCODER = "resemblyzer"


def _local_folder(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {path} is not a local model folder (no config.json); copy the model there "
                                f"first, nothing is downloaded")
    return path


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SpeakerEmbedder(ABC):
    """What every speaker encoder gives: an utterance embedding, and embeddings of windows along a clip."""

    WINDOW_SECONDS = 1.6  # GE2E's partial utterance
    STEP_SECONDS = 0.8
    spec = ""

    @abstractmethod
    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """The utterance embedding of a mono clip at any rate."""

    @abstractmethod
    def embed_clip(self, wav16k: np.ndarray) -> np.ndarray:
        """The embedding of a 16 kHz clip as it is (no trimming)."""

    def windows(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """([n, D] unit embeddings, [n, 2] window bounds in samples of `sample_rate`, clipped to the clip).
        A clip shorter than a window is one window."""
        wav16k = resample(np.asarray(wav, dtype=np.float32), sample_rate, MODEL_RATE)
        size, step = int(self.WINDOW_SECONDS * MODEL_RATE), int(self.STEP_SECONDS * MODEL_RATE)
        starts = list(range(0, max(len(wav16k) - size, 0) + 1, step))
        if starts[-1] + size < len(wav16k):
            starts.append(len(wav16k) - size)  # the tail, in a window of full length
        embeds = unit(np.stack([self.embed_clip(wav16k[s:s + size]) for s in starts]))
        return embeds, _bounds(starts, size, len(wav16k), sample_rate)


def _bounds(starts: list[int], size: int, length16k: int, sample_rate: int) -> np.ndarray:
    scale = sample_rate / MODEL_RATE
    return np.array([[round(s * scale), round(min(s + size, length16k) * scale)] for s in starts], dtype=np.int64)


class ResemblyzerEmbedder(SpeakerEmbedder):
    """256-d GE2E speaker embedding; for an utterance, silence longer than resemblyzer's VAD window is cut first."""

    MIN_SAMPLES = MODEL_RATE // 4  # resemblyzer needs some speech; below this the untrimmed clip is used
    spec = "resemblyzer"

    def __init__(self, device: str = "cpu") -> None:
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device=device, verbose=False)

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import normalize_volume

        wav = resample(wav, sample_rate, MODEL_RATE)
        trimmed = preprocess_wav(wav)
        if len(trimmed) < self.MIN_SAMPLES:  # VAD kept (almost) nothing: noise or silence
            trimmed = normalize_volume(wav, -30, increase_only=True)
        return self.encoder.embed_utterance(trimmed)

    def embed_clip(self, wav16k: np.ndarray) -> np.ndarray:
        from resemblyzer.audio import normalize_volume

        return self.encoder.embed_utterance(normalize_volume(wav16k, -30, increase_only=True))

    def windows(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """GE2E's own partial utterances, one LSTM batch per clip (one window per `STEP_SECONDS`)."""
        from resemblyzer.audio import normalize_volume

        wav16k = normalize_volume(resample(np.asarray(wav, dtype=np.float32), sample_rate, MODEL_RATE), -30,
                                  increase_only=True)
        _, partials, slices = self.encoder.embed_utterance(wav16k, return_partials=True, rate=1 / self.STEP_SECONDS,
                                                           min_coverage=0.75)
        starts = [s.start for s in slices]
        return unit(partials), _bounds(starts, slices[0].stop - slices[0].start, len(wav16k), sample_rate)


class WavLMEmbedder(SpeakerEmbedder):
    """x-vector of a local `WavLMForXVector` (seed-tts-eval scores SIM with a WavLM speaker model)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from transformers import AutoFeatureExtractor, WavLMForXVector

        path = _local_folder(path, "WavLM speaker model")
        self.features = AutoFeatureExtractor.from_pretrained(str(path))
        self.model = WavLMForXVector.from_pretrained(str(path)).to(device).eval()
        self.device, self.spec = device, f"wavlm:{path}"

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.embed_clip(resample(wav, sample_rate, MODEL_RATE))

    @torch.no_grad()
    def embed_clip(self, wav16k: np.ndarray) -> np.ndarray:
        inputs = self.features(wav16k, sampling_rate=MODEL_RATE, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model(**inputs).embeddings[0].float().cpu().numpy()


def parse_encoder_spec(spec: str) -> tuple[str, str | None]:
    """"resemblyzer" -> ("resemblyzer", None); "wavlm:PATH" -> ("wavlm", PATH); anything else a ValueError."""
    kind, _, path = spec.partition(":")
    if kind == "resemblyzer" and not path:
        return kind, None
    if kind == "wavlm" and path:
        return kind, path
    raise ValueError(f"speaker encoder {spec!r} is neither 'resemblyzer' nor 'wavlm:PATH'")


def load_speaker_encoder(spec: str = DEFAULT_ENCODER, device: str = "cpu") -> SpeakerEmbedder:
    """The encoder a spec names (`resemblyzer`, or `wavlm:PATH` for a local folder)."""
    kind, path = parse_encoder_spec(spec)
    return ResemblyzerEmbedder(device) if kind == "resemblyzer" else WavLMEmbedder(path, device)
