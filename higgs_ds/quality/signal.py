"""Signal-level code, no model: `resample` (the one resampling helper of prep and the metrics), and
mel-cepstral distortion (MCD) with dynamic time warping.

MCD here is computed on mel-frequency cepstra (the cosine transform of the log mel amplitude spectrum,
scaled like a real cepstrum; coefficients 1..24, 5 ms hop at 16 kHz), not on SPTK mel-generalised
cepstra: values are comparable between runs of this code and of the same order as published MCDs,
not equal to them. Leading and trailing silence is trimmed and both signals share one log floor
(80 dB below the reference's peak), so silence does not dominate. The DTW is a plain numpy one
(anti-diagonal sweeps), so no JIT compilation delays the first call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio

MCD_RATE = 16000
_MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)  # dB per unit of natural-log cepstral distance


def resample(wav: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 waveform at `target_rate` (returned unchanged when the rates match)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate == target_rate:
        return wav
    return torchaudio.functional.resample(torch.from_numpy(wav), sample_rate, target_rate).numpy()


def _mel_power(wav: np.ndarray) -> np.ndarray:
    import librosa

    wav, _ = librosa.effects.trim(wav, top_db=40) if np.any(wav) else (wav, None)
    return librosa.feature.melspectrogram(y=wav, sr=MCD_RATE, n_fft=512, hop_length=80, n_mels=80, power=2.0)


def mel_cepstrum(power: np.ndarray, floor: float, n_ceps: int = 24) -> np.ndarray:
    """[n_mels, frames] mel power -> [n_ceps, frames] cepstra of the log amplitude, c_k = 1/M sum_m
    log|X_m| cos(pi k (m + 1/2) / M), as a real cepstrum scales them (c0, the energy term, dropped)."""
    from scipy.fft import dct

    log_amplitude = 0.5 * np.log(np.maximum(power, floor))
    return dct(log_amplitude, type=2, axis=0)[1: n_ceps + 1] / (2 * power.shape[0])


def dtw_path(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost monotonic alignment of a [N, M] cost matrix with steps (1,0), (0,1), (1,1):
    [L, 2] index pairs from (0, 0) to (N-1, M-1)."""
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    rows = np.arange(n)
    for d in range(n + m - 1):  # cells i + j = d depend only on diagonals d-1 and d-2
        i = rows[max(0, d - m + 1): min(n, d + 1)]
        j = d - i
        if d == 0:
            acc[0, 0] = cost[0, 0]
            continue
        up = np.where(i > 0, acc[np.maximum(i - 1, 0), j], np.inf)
        left = np.where(j > 0, acc[i, np.maximum(j - 1, 0)], np.inf)
        diag = np.where((i > 0) & (j > 0), acc[np.maximum(i - 1, 0), np.maximum(j - 1, 0)], np.inf)
        acc[i, j] = cost[i, j] + np.minimum(np.minimum(up, left), diag)
    i, j, path = n - 1, m - 1, [(n - 1, m - 1)]
    while i > 0 or j > 0:
        steps = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        i, j = min((s for s in steps if s[0] >= 0 and s[1] >= 0), key=lambda s: acc[s])
        path.append((i, j))
    return np.array(path[::-1])


def mcd_with_length_ratio(wav: np.ndarray, sample_rate: int, reference: np.ndarray,
                          reference_rate: int) -> tuple[float, float]:
    """(mean MCD in dB along the DTW path, longer / shorter frame count) of `wav` against `reference`."""
    power = _mel_power(resample(wav, sample_rate, MCD_RATE))
    ref_power = _mel_power(resample(reference, reference_rate, MCD_RATE))
    if power.shape[1] == 0 or ref_power.shape[1] == 0:
        raise ValueError("mel_cepstral_distortion: empty audio")
    floor = max(float(ref_power.max()), 1e-10) * 1e-8
    c, c_ref = mel_cepstrum(power, floor), mel_cepstrum(ref_power, floor)
    cost = np.sqrt(np.maximum((c * c).sum(0)[:, None] + (c_ref * c_ref).sum(0)[None] - 2 * c.T @ c_ref, 0.0))
    path = dtw_path(cost)
    dist = np.linalg.norm(c[:, path[:, 0]] - c_ref[:, path[:, 1]], axis=0)
    ratio = max(c.shape[1], c_ref.shape[1]) / min(c.shape[1], c_ref.shape[1])
    return float(_MCD_SCALE * dist.mean()), ratio


def mel_cepstral_distortion(wav: np.ndarray, sample_rate: int, reference: np.ndarray, reference_rate: int,
                            length_penalty: bool = False) -> float:
    """Mean MCD in dB along the DTW path between `wav` and `reference` (0 for identical audio).

    DTW lets a long output align its best frames to a short reference, so babble several times the
    reference's length can score well; `length_penalty` multiplies by the ratio of the longer to the
    shorter frame count (MCD-DTW-SL)."""
    mcd, ratio = mcd_with_length_ratio(wav, sample_rate, reference, reference_rate)
    return mcd * ratio if length_penalty else mcd
