"""The codec interface: mono waveforms <-> discrete codes [K, T], described by an :class:`AudioSpec`."""

from __future__ import annotations

import hashlib
import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import soundfile
import torch
import torchaudio

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.errors import CodecError, quote

CODEC_KINDS = ("auto", "dac", "higgs")


class CodecLoadError(CodecError):
    """A codec folder or file that is not what was asked for (names the path and what is wrong)."""


def unreadable_weights(exc: Exception) -> str:
    """Why a torch weights file did not load, in our words. torch's own text for a refused pickle advises
    loading it with weights_only=False, which would let the file run code: never passed on."""
    if isinstance(exc, KeyError):
        return f"a torch file without the {exc} entry: weights of another model"
    if isinstance(exc, pickle.UnpicklingError | EOFError) or "weights_only" in str(exc):
        return "not a torch file of tensors: damaged, another format, or it holds code, which is never loaded"
    return f"{type(exc).__name__}: {quote(' '.join(str(exc).split()), 120)}"


def load_weights(path: Path) -> dict:
    """A torch weights file, tensors only (weights_only): a CodecLoadError naming it when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        raise CodecLoadError(f"{path} cannot be loaded ({unreadable_weights(exc)})",
                             fix="copy the codec's weights file again from where it was published") from None


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file as a mono (channel mean) float32 tensor [samples] and its sample rate."""
    data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} has no samples")
    return torch.from_numpy(data.mean(axis=1)), int(sample_rate)


def sha256_of_files(paths: Iterable[str | Path]) -> str:
    """One digest over the files' names and bytes, in the given order (the fingerprint of codec weights)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CodecConfig:
    path: str  # a local codec: a DAC .pth file, a transformers tokenizer folder, or Boson's tokenizer folder
    kind: str = "auto"  # "auto" (from the path) | "dac" | "higgs"
    num_codebooks: int | None = None  # DAC only: quantizers to keep (None = all of the model's)
    device: str = "auto"
    batch_size: int = 8  # waveforms encoded together (codecs that can batch padded audio)

    def __post_init__(self) -> None:
        if self.kind not in CODEC_KINDS:
            raise ValueError(f"unknown codec kind {self.kind!r}; use one of {CODEC_KINDS}")
        if not self.path:
            raise ValueError("a codec path is required (--codec-path)")
        if not Path(self.path).exists():
            raise FileNotFoundError(f"codec path {self.path} does not exist")
        if self.num_codebooks is not None and self.num_codebooks < 1:
            raise ValueError(f"--num-codebooks {self.num_codebooks} is out of range: give an integer >= 1")
        if self.batch_size < 1:
            raise ValueError(f"--codec-batch-size {self.batch_size} is out of range: give an integer >= 1")


class AudioCodec(ABC):
    """Encode mono waveforms to codes [K, T] (values in [0, codebook_size)) and decode them back."""

    spec: AudioSpec
    # False when padding one waveform of a batch changes another's codes (e.g. a model with attention
    # over the whole input): such codecs encode each waveform alone, so codes never depend on batching.
    pads_independently: bool = True

    @abstractmethod
    def _encode_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, 1, samples] at the codec rate on the codec's device -> codes [B, K, >= frames]."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [K, T] (long, on the codec's device) -> mono waveform [samples] at the codec rate."""

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def num_codebooks(self) -> int:
        return self.spec.num_codebooks

    def frames_for(self, num_samples: int) -> int:
        """Frames the codec gives for ``num_samples`` at its own rate (the last partial frame counts)."""
        return math.ceil(num_samples / self.spec.samples_per_frame)

    @torch.inference_mode()
    def encode(self, waveforms: list[torch.Tensor], sample_rate: int, batch_size: int = 8) -> list[torch.Tensor]:
        """Mono waveforms at ``sample_rate`` -> int64 codes [K, T_i] on the CPU. Waveforms are resampled to
        the codec rate, then encoded in zero-padded batches of similar length (or alone, see
        ``pads_independently``)."""
        resampled = [torchaudio.functional.resample(w.float(), sample_rate, self.sample_rate)
                     if sample_rate != self.sample_rate else w.float() for w in waveforms]
        order = sorted(range(len(resampled)), key=lambda i: resampled[i].numel())  # less padding
        step = batch_size if self.pads_independently else 1
        out: list[torch.Tensor | None] = [None] * len(resampled)
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            longest = max(resampled[i].numel() for i in idx)
            batch = torch.zeros(len(idx), 1, longest)
            for row, i in enumerate(idx):
                batch[row, 0, : resampled[i].numel()] = resampled[i]
            codes = self._encode_batch(batch.to(self.device)).long().cpu()
            for row, i in enumerate(idx):
                frames = self.frames_for(resampled[i].numel())
                if codes.shape[-1] < frames:
                    raise RuntimeError(f"{self.spec.codec} codec returned {codes.shape[-1]} frames for "
                                       f"{resampled[i].numel()} samples, expected {frames}")
                out[i] = codes[row, :, :frames].contiguous()
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [K, T] -> mono float waveform [T x samples per frame] on the CPU (empty for T = 0)."""
        if codes.dim() != 2 or codes.shape[0] != self.num_codebooks:
            raise ValueError(f"codes of shape {tuple(codes.shape)}: the {self.spec.codec} codec takes "
                             f"[{self.num_codebooks}, T]")
        if codes.shape[1] == 0:
            return torch.zeros(0)
        if int(codes.min()) < 0 or int(codes.max()) >= self.spec.codebook_size:
            raise ValueError(f"codes outside [0, {self.spec.codebook_size}): stream BOS/EOS must be removed "
                             f"before decoding")
        return self._decode(codes.long().to(self.device)).float().cpu()
