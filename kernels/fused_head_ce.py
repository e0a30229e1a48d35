"""Fused head + cross-entropy on the Triton path: torch GEMMs per chunk, Triton CE in between.

The chunk loop, row compaction and recompute-in-backward live in `chunked_ce` (pure PyTorch, shared
with the CPU reference); here the per-chunk softmax statistics and the in-place gradient are the
fused Triton kernels of `codebook_ce`, so each logits chunk is read once per pass in fp32.
"""

from __future__ import annotations

from higgs_ds.kernels.chunked_ce import (
    ChunkOps,
    chunked_codebook_linear_cross_entropy,
    chunked_linear_cross_entropy,
)
from higgs_ds.kernels.codebook_ce import codebook_ce_grad_, codebook_ce_stats

TRITON_CHUNK_OPS = ChunkOps(stats=codebook_ce_stats, grad_=codebook_ce_grad_)


def linear_cross_entropy(hidden, weight, targets):
    """Text head: hidden [N, H] × weight [V, H], targets [N] -> fp32 0-dim (loss_sum, n_valid, n_correct)."""
    return chunked_linear_cross_entropy(hidden, weight, targets, ops=TRITON_CHUNK_OPS)


def codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights=None):
    """Audio head: weight [K*C, H] codebook-major, targets [N, K] -> fp32 per-codebook sums [K]."""
    return chunked_codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights,
                                                 ops=TRITON_CHUNK_OPS)
