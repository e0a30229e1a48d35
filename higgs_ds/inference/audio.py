"""Codes -> waveform -> files: wav, codes (.npy) and a log-magnitude spectrogram image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch

from higgs_ds.codec import AudioCodec


def decode_codes(codec: AudioCodec, codes: torch.Tensor) -> torch.Tensor:
    """Codes [K, T] -> mono float waveform [samples] on the CPU (empty for T = 0)."""
    return codec.decode(torch.as_tensor(codes).long())


def write_wav(path: str | Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """16-bit PCM wav (values clipped to [-1, 1])."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wav.detach().float().clamp(-1, 1).cpu().numpy(), sample_rate, subtype="PCM_16")
    return path


def write_codes(path: str | Path, codes: torch.Tensor) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, codes.cpu().numpy().astype(np.int16))
    return path


def write_spectrogram(path: str | Path, wav: torch.Tensor, sample_rate: int, title: str = "") -> Path:
    """Log-magnitude STFT (25 ms window, 10 ms hop) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_fft, hop = max(16, int(0.025 * sample_rate)), max(1, int(0.010 * sample_rate))
    signal = wav.float().cpu()
    if signal.numel() < n_fft:
        signal = torch.nn.functional.pad(signal, (0, n_fft - signal.numel()))
    spec = torch.stft(signal, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp(min=1e-5))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
              extent=(0, signal.numel() / sample_rate, 0, sample_rate / 2000))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
