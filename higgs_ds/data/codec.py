"""Audio codecs: waveform <-> discrete codes [K, T].

:class:`AudioCodec` is the interface the shard builder and the listening tools use. DAC
(descript-audio-codec) is implemented here; another codec (e.g. transformers'
``HiggsAudioV2TokenizerModel``, whose codes match real Higgs Audio v2 checkpoints) is one subclass
registered in :data:`CODECS`.

Real DAC weights cannot be downloaded on the build machines, so the demo uses
:func:`build_seeded_demo_dac`: a small DAC (~1.8M parameters, 16 kHz, hop 640 -> 25 frames/s like
Higgs, 8 x 1024 codebooks) with seeded random weights. Its codes are deterministic but carry no
learned acoustic meaning; decoding them does not give back intelligible speech.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file as a mono float32 tensor [samples] and its sample rate."""
    data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} has no samples")
    return torch.from_numpy(data.mean(axis=1)), int(sample_rate)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CodecConfig:
    kind: str = "dac"
    weights: str | None = None  # local path; required
    num_codebooks: int = 8
    device: str = "auto"  # "auto" = cuda when available
    batch_size: int = 8  # waveforms encoded together

    def __post_init__(self) -> None:
        if self.kind not in CODECS:
            raise ValueError(f"unknown codec kind {self.kind!r}; known: {sorted(CODECS)}")
        if not self.weights:
            raise ValueError("codec weights path is required (pass --codec-weights)")
        if self.num_codebooks < 1 or self.batch_size < 1:
            raise ValueError(f"invalid codec config {self}")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class AudioCodec(ABC):
    """Encode mono waveforms to codes [K, T] (values in [0, codebook_size)) and decode them back."""

    name: str
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    @abstractmethod
    def _encode_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, 1, samples] at ``sample_rate`` on the codec's device -> codes [B, K, T]."""

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [K, T] -> mono waveform [samples] at ``sample_rate`` (for listening)."""

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    def describe(self) -> dict:
        """Recorded in shards.json so readers can check the codes they get."""
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": float(self.frame_rate),
                "num_codebooks": self.num_codebooks, "codebook_size": self.codebook_size}

    def frames_for(self, num_samples: int, sample_rate: int) -> int:
        return math.ceil(num_samples * self.frame_rate / sample_rate)

    @torch.inference_mode()
    def encode(self, waveforms: list[torch.Tensor], sample_rate: int, batch_size: int = 8) -> list[torch.Tensor]:
        """Mono waveforms at ``sample_rate`` -> list of int64 codes [K, T_i] on CPU. Waveforms are
        resampled to the codec rate, then encoded in zero-padded batches of similar length."""
        resampled = [torchaudio.functional.resample(w.float(), sample_rate, self.sample_rate)
                     if sample_rate != self.sample_rate else w.float() for w in waveforms]
        order = sorted(range(len(resampled)), key=lambda i: resampled[i].numel())  # less padding
        out: list[torch.Tensor | None] = [None] * len(resampled)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            longest = max(resampled[i].numel() for i in idx)
            batch = torch.zeros(len(idx), 1, longest)
            for row, i in enumerate(idx):
                batch[row, 0, : resampled[i].numel()] = resampled[i]
            codes = self._encode_batch(batch.to(self.device)).long().cpu()
            for row, i in enumerate(idx):
                frames = self.frames_for(resampled[i].numel(), self.sample_rate)
                out[i] = codes[row, :, :frames].contiguous()
        return out  # type: ignore[return-value]


class DacCodec(AudioCodec):
    """descript-audio-codec, loaded from local weights with ``dac.DAC.load(path)``."""

    def __init__(self, cfg: CodecConfig) -> None:
        import dac  # imported lazily: loading audiotools is slow and only the builder needs it

        self.model = dac.DAC.load(str(cfg.weights)).to(cfg.resolved_device()).eval()
        if cfg.num_codebooks > self.model.n_codebooks:
            raise ValueError(f"{cfg.weights}: DAC has {self.model.n_codebooks} codebooks, "
                             f"{cfg.num_codebooks} requested")
        self.name = "dac"
        self.sample_rate = int(self.model.sample_rate)
        self.frame_rate = float(self.sample_rate / self.model.hop_length)
        self.num_codebooks = cfg.num_codebooks
        self.codebook_size = int(self.model.codebook_size)
        self.weights_sha256 = file_sha256(cfg.weights)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode_batch(self, batch: torch.Tensor) -> torch.Tensor:
        audio = self.model.preprocess(batch, self.sample_rate)  # pads to a multiple of the hop
        _, codes, *_ = self.model.encode(audio, n_quantizers=self.num_codebooks)
        return codes[:, : self.num_codebooks]

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        latents, _, _ = self.model.quantizer.from_codes(codes[None].to(self.device).long())
        return self.model.decode(latents)[0, 0].float().cpu()

    def describe(self) -> dict:
        return {**super().describe(), "weights_sha256": self.weights_sha256}


CODECS: dict[str, type[AudioCodec]] = {"dac": DacCodec}


def load_codec(cfg: CodecConfig) -> AudioCodec:
    return CODECS[cfg.kind](cfg)


def build_seeded_demo_dac(path: str | Path, seed: int = 0) -> Path:
    """Write a small DAC with seeded random weights (the demo codec; see the module docstring).
    Idempotent: an existing file is kept."""
    import dac

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = dac.DAC(encoder_dim=16, encoder_rates=[2, 4, 8, 10], decoder_dim=64, decoder_rates=[10, 8, 4, 2],
                    n_codebooks=8, codebook_size=1024, sample_rate=16000)
    tmp = path.with_suffix(".tmp")
    model.save(str(tmp), package=False)
    tmp.rename(path)
    return path


def codes_to_int16(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    """Codes are stored as int16 [K, T] (1024 entries fit; halves the shard size vs int64)."""
    return np.asarray(codes, dtype=np.int16)
