"""MusicGen-style delay pattern used by Higgs Audio v2 (reference notes §5).

Codebook k is shifted right by k. An audio segment of T frames is wrapped as ``[BOS | codes | EOS]``
(T+2 columns) and delayed to T+K+1 columns: row k gets k leading BOS and K-1-k trailing EOS. Labels
are ``[-100 | codes | EOS]`` under the same shift, so column 0 is never a target and each row's single
EOS label tells that codebook where to stop. Example, K=4, T=2 (B=1024, E=1025, _=-100)::

    input   B a b E E E E      labels  _ a b E _ _ _
            B B c d E E E              _ _ c d E _ _
            B B B e f E E              _ _ _ e f E _
            B B B B g h E              _ _ _ _ g h E

The generation code reuses :func:`revert_delay_pattern` / :func:`codes_from_delayed_segment`.
"""

from __future__ import annotations

import torch

from higgs_ds.constants import IGNORE_INDEX  # noqa: F401 (re-exported)

AUDIO_STREAM_BOS = 1024
AUDIO_STREAM_EOS = 1025


def build_delay_pattern(codes: torch.Tensor, bos: int, pad: int) -> torch.Tensor:
    """[K, L] -> [K, L+K-1]: row k = k x ``bos``, the row, K-1-k x ``pad``."""
    if codes.dim() != 2:
        raise ValueError(f"expected codes of shape [K, L], got {tuple(codes.shape)}")
    num_codebooks, length = codes.shape
    out = codes.new_full((num_codebooks, length + num_codebooks - 1), pad)
    for k in range(num_codebooks):
        out[k, :k] = bos
        out[k, k : k + length] = codes[k]
    return out


def revert_delay_pattern(delayed: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`build_delay_pattern`: [K, L+K-1] -> [K, L] with row k = delayed[k, k:L+k]."""
    if delayed.dim() != 2:
        raise ValueError(f"expected delayed codes of shape [K, L+K-1], got {tuple(delayed.shape)}")
    num_codebooks, width = delayed.shape
    length = width - num_codebooks + 1
    if length < 0:
        raise ValueError(f"delayed width {width} is shorter than K-1={num_codebooks - 1}")
    return torch.stack([delayed[k, k : k + length] for k in range(num_codebooks)])


def delay_segment_input(codes: torch.Tensor) -> torch.Tensor:
    """Model input for one audio segment: codes [K, T] -> [K, T+K+1] (``[BOS|codes|EOS]`` delayed)."""
    num_codebooks = codes.shape[0]
    bos = codes.new_full((num_codebooks, 1), AUDIO_STREAM_BOS)
    eos = codes.new_full((num_codebooks, 1), AUDIO_STREAM_EOS)
    return build_delay_pattern(torch.cat([bos, codes, eos], dim=1), bos=AUDIO_STREAM_BOS, pad=AUDIO_STREAM_EOS)


def delay_segment_labels(codes: torch.Tensor, trained: bool = True) -> torch.Tensor:
    """Audio labels for one audio-out segment: [K, T] -> [K, T+K+1] (``[-100|codes|EOS]`` delayed).

    An untrained segment (e.g. a voice-cloning reference) is all -100 but keeps its shape, so rows
    stay aligned with the audio-out positions."""
    num_codebooks, frames = codes.shape
    if not trained:
        return codes.new_full((num_codebooks, frames + num_codebooks + 1), IGNORE_INDEX)
    ignore = codes.new_full((num_codebooks, 1), IGNORE_INDEX)
    eos = codes.new_full((num_codebooks, 1), AUDIO_STREAM_EOS)
    return build_delay_pattern(torch.cat([ignore, codes, eos], dim=1), bos=IGNORE_INDEX, pad=IGNORE_INDEX)


def codes_from_delayed_segment(delayed: torch.Tensor) -> torch.Tensor:
    """Generated/delayed segment [K, T+K+1] -> codec codes [K, T] (drops the BOS and EOS columns)."""
    return revert_delay_pattern(delayed)[:, 1:-1]


def segment_positions(frames: int, num_codebooks: int) -> int:
    """LLM positions taken by a segment of ``frames`` frames: T+K+1 (T+9 for K=8)."""
    return frames + num_codebooks + 1
