"""MusicGen-style delay pattern used by Higgs Audio v2.

Codebook k is shifted right by k. The stream BOS/EOS ids come from the data's `AudioSpec` (1024/1025 for
1024-code codebooks). An audio segment of T frames is wrapped as ``[BOS | codes | EOS]``
(T+2 columns) and delayed to T+K+1 columns: row k gets k leading BOS and K-1-k trailing EOS. Labels
are ``[-100 | codes | EOS]`` under the same shift, so column 0 is never a target and each row's single
EOS label tells that codebook where to stop. Example, K=4, T=2 (B=1024, E=1025, _=-100)::

    input   B a b E E E E      labels  _ a b E _ _ _
            B B c d E E E              _ _ c d E _ _
            B B B e f E E              _ _ _ e f E _
            B B B B g h E              _ _ _ _ g h E

The generation code reuses :func:`revert_delay_pattern` / :func:`strip_delayed_segment`.
"""

from __future__ import annotations

import torch

from higgs_ds.constants import IGNORE_INDEX  # noqa: F401 (re-exported)


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


def delay_segment_input(codes: torch.Tensor, bos: int, eos: int) -> torch.Tensor:
    """Model input for one audio segment: codes [K, T] -> [K, T+K+1] (``[BOS|codes|EOS]`` delayed)."""
    num_codebooks = codes.shape[0]
    bos_col = codes.new_full((num_codebooks, 1), bos)
    eos_col = codes.new_full((num_codebooks, 1), eos)
    return build_delay_pattern(torch.cat([bos_col, codes, eos_col], dim=1), bos=bos, pad=eos)


def delay_segment_labels(codes: torch.Tensor, eos: int, trained: bool = True) -> torch.Tensor:
    """Audio labels for one audio-out segment: [K, T] -> [K, T+K+1] (``[-100|codes|EOS]`` delayed).

    An untrained segment (e.g. a voice-cloning reference) is all -100 but keeps its shape, so rows
    stay aligned with the audio-out positions."""
    num_codebooks, frames = codes.shape
    if not trained:
        return codes.new_full((num_codebooks, frames + num_codebooks + 1), IGNORE_INDEX)
    ignore = codes.new_full((num_codebooks, 1), IGNORE_INDEX)
    eos_col = codes.new_full((num_codebooks, 1), eos)
    return build_delay_pattern(torch.cat([ignore, codes, eos_col], dim=1), bos=IGNORE_INDEX, pad=IGNORE_INDEX)


def strip_delayed_segment(delayed: torch.Tensor) -> torch.Tensor:
    """A complete delayed segment [K, T+K+1] -> codec codes [K, T] (delay reverted, BOS and EOS columns
    dropped). For a generated segment that may be unfinished, see `higgs_ds.models.delay_decoding`."""
    return revert_delay_pattern(delayed)[:, 1:-1]


def segment_positions(frames: int, num_codebooks: int) -> int:
    """LLM positions taken by a segment of ``frames`` frames: T+K+1 (T+9 for K=8)."""
    return frames + num_codebooks + 1
