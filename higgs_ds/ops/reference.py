"""Pure-PyTorch reference implementations of the fused ops.

These are the CPU fallback and the ground truth the Triton kernels in `higgs_ds.kernels` are
tested against. They call modules (not raw weights) so that ZeRO-3 parameter hooks fire.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from higgs_ds.constants import IGNORE_INDEX  # noqa: F401 (re-exported)
from higgs_ds.kernels.chunked_ce import (
    chunked_codebook_linear_cross_entropy,
    chunked_linear_cross_entropy,
)


def routed_ffn(
    hidden: torch.Tensor,
    audio_mask: torch.Tensor,
    text_norm: nn.Module,
    text_mlp: nn.Module,
    audio_norm: nn.Module,
    audio_mlp: nn.Module,
) -> torch.Tensor:
    """`hidden + mlp(norm(hidden))` where each token takes exactly one of the two paths.

    hidden: [..., H]; audio_mask: [...] bool. Each MLP only sees its own tokens (no compute-both-and-
    select). Both MLPs are called on every step, possibly on zero rows, so every ZeRO-3 rank runs the
    same module sequence.
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    mask = audio_mask.reshape(-1)
    audio_idx = mask.nonzero().squeeze(1)
    text_idx = (~mask).nonzero().squeeze(1)
    text_out = text_mlp(text_norm(flat.index_select(0, text_idx)))
    audio_out = audio_mlp(audio_norm(flat.index_select(0, audio_idx)))
    out = flat.index_add(0, text_idx, text_out.to(flat.dtype))
    out = out.index_add(0, audio_idx, audio_out.to(flat.dtype))
    return out.view_as(hidden)


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of `hidden @ weight.T` against `targets` (ignore_index=-100), chunked.

    hidden: [N, H]; weight: [V, H]; targets: [N]. Returns fp32 (loss_sum, n_valid, n_correct), all
    0-dim tensors. Summed, not averaged: the caller normalises by a global token count. With no valid
    target the loss is an exact 0 that still carries (zero) gradients to `hidden` and `weight`.
    Same math as `linear_cross_entropy_naive`, with peak memory independent of N × V.
    """
    return chunked_linear_cross_entropy(hidden, weight, targets)


def codebook_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
    codebook_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Audio head + per-codebook CE: hidden [N, H], weight [K*C, H] (codebook-major), targets [N, K].

    Returns fp32 [K] tensors (loss_sum, n_valid, n_correct); `codebook_weights` [K] scales each
    codebook's loss sum (and gradient). Chunked like `linear_cross_entropy`.
    """
    return chunked_codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights)


def codebook_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, codebook_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-codebook cross-entropy of logits [N, K, C] against targets [N, K] (ignore_index=-100).

    Returns fp32 tensors of shape [K]: (loss_sum, n_valid, n_correct) per codebook; the loss sums
    are scaled by `codebook_weights` [K] when given.
    """
    n, k, c = logits.shape
    flat = logits.float().reshape(n * k, c)
    per_item = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    valid = targets != IGNORE_INDEX
    loss_sum = per_item.view(n, k).sum(0)
    if codebook_weights is not None:
        loss_sum = loss_sum * codebook_weights.float()
    with torch.no_grad():
        n_correct = ((flat.argmax(-1).view(n, k) == targets) & valid).sum(0).float()
    return loss_sum, valid.sum(0).float(), n_correct


# Naive versions that materialise the full logits: ground truth for tests and benchmark baselines.


def linear_cross_entropy_naive(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = F.linear(hidden, weight).float()
    loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = targets != IGNORE_INDEX
    with torch.no_grad():
        n_correct = ((logits.argmax(-1) == targets) & valid).sum().float()
    return loss_sum, valid.sum().float(), n_correct


def codebook_linear_cross_entropy_naive(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
    codebook_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k = targets.shape[-1]
    logits = F.linear(hidden, weight).view(hidden.shape[0], k, -1)
    return codebook_cross_entropy(logits, targets, codebook_weights)
