"""Offline speech metrics behind `higgs_ds.inference.scoring.SpeechScorer`.

- `signal`: mel-cepstral distortion with DTW against a reference recording (no model);
- `models`: speaker similarity (resemblyzer's bundled encoder, or a local `WavLMForXVector` folder),
  DNSMOS (speechmos' bundled ONNX models) and ASR (a local `WhisperForConditionalGeneration` folder).

Everything runs offline: nothing is downloaded. Heavy imports happen when a model is built.
"""

from higgs_ds.inference.metrics.models import DnsMos, ResemblyzerEmbedder, WavLMEmbedder, WhisperTranscriber
from higgs_ds.inference.metrics.signal import mel_cepstral_distortion, mel_cepstrum, resample

__all__ = ["DnsMos", "ResemblyzerEmbedder", "WavLMEmbedder", "WhisperTranscriber", "mel_cepstral_distortion",
           "mel_cepstrum", "resample"]
