"""Model-based metrics, all loaded from local files: nothing is downloaded.

- `ResemblyzerEmbedder`, `WavLMEmbedder`: speaker embeddings (`speaker_encoder`, the interface they share
  with diarization and speaker linking; `load_speaker_encoder("resemblyzer" | "wavlm:PATH")`).
- `WhisperTranscriber`: a local `WhisperForConditionalGeneration` folder with its processor, decoding
  in a fixed language (Arabic by default).
- `DnsMos`: DNSMOS P.835 + P.808 from speechmos' bundled ONNX models (16 kHz input).

Each is a callable `(mono waveform, sample rate) -> result`, the hook types of `SpeechScorer`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from higgs_ds.quality.signal import resample
from higgs_ds.quality.speaker_encoder import (  # noqa: F401 (the scorer's speaker models, re-exported)
    MODEL_RATE,  # the input rate of every model here, Whisper's included (prep resamples to it)
    ResemblyzerEmbedder,
    WavLMEmbedder,
    _local_folder,
    load_speaker_encoder,
)


class WhisperTranscriber:
    """Transcript of one utterance by a local Whisper checkpoint, decoding in `language` (no detection)."""

    def __init__(self, path: str | Path, device: str = "cpu", language: str = "ar", max_new_tokens: int = 200) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        path = _local_folder(path, "Whisper ASR model")
        self.processor = WhisperProcessor.from_pretrained(str(path))
        self.model = WhisperForConditionalGeneration.from_pretrained(str(path)).to(device).eval()
        self.device, self.language, self.max_new_tokens = device, language, max_new_tokens

    @torch.no_grad()
    def __call__(self, wav: np.ndarray, sample_rate: int) -> str:
        features = self.processor(resample(wav, sample_rate, MODEL_RATE), sampling_rate=MODEL_RATE, return_tensors="pt")
        ids = self.model.generate(features.input_features.to(self.device), language=self.language,
                                  task="transcribe", max_new_tokens=self.max_new_tokens)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


class DnsMos:
    """DNSMOS scores (1..5, higher is better): overall, signal, background and P.808.

    speechmos' own `run` opens its ONNX sessions with default threading, whose spinning worker threads
    make a clip take ~20x longer on a busy machine; the sessions here use `threads` threads."""

    WINDOW = int(9.01 * MODEL_RATE) + 1

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from speechmos import dnsmos

        models = Path(dnsmos.__file__).parent
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1

        def session(name: str):
            return onnxruntime.InferenceSession(str(models / name), options, providers=["CPUExecutionProvider"])

        self.model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # its scoring code, our sessions
        self.model.primary_model_path = str(models / "dnsmos_models/sig_bak_ovr.onnx")
        self.model.onnx_sess = session("dnsmos_models/sig_bak_ovr.onnx")
        self.model.p808_onnx_sess = session("dnsmos_models/model_v8.onnx")

    def __call__(self, wav: np.ndarray, sample_rate: int) -> dict[str, float]:
        wav = np.clip(resample(wav, sample_rate, MODEL_RATE), -1.0, 1.0)
        # DNSMOS scores 9.01 s windows with a 1 s hop; speechmos repeats a short clip by doubling it
        # (up to 18 s, i.e. up to 9 windows). Repeating it cyclically to one window is the same audio, once.
        wav = np.resize(wav, max(len(wav), self.WINDOW))
        out = self.model(wav, MODEL_RATE, False)
        return {"dnsmos_ovrl": float(out["ovrl_mos"]), "dnsmos_sig": float(out["sig_mos"]),
                "dnsmos_bak": float(out["bak_mos"]), "dnsmos_p808": float(out["p808_mos"])}
