"""Head projection + (multi-codebook) cross-entropy that never materialises the full logits.

Shared by the PyTorch reference and the Triton path; only the per-chunk CE math differs (`ChunkOps`).
The text head is the K = 1 case (C = V); the audio head has K codebooks of C classes, with the
weight rows codebook-major ([K*C, H]).

Forward: keep only rows with at least one label (TTS batches ignore most rows for one head or the
other, so this skips real FLOPs), then per chunk of rows: logits = h @ Wᵀ, fp32 LSE / loss / counts.
Only the LSE ([rows, K] fp32) is saved. Backward recomputes each chunk's logits and turns them in
place into `scale_k * (softmax - onehot)`, then dH = G @ W and dW += Gᵀ @ H (fp32). Recomputing in
the backward (CCE style) rather than storing dH/dW in the forward (Liger style) keeps per-codebook
upstream gradients exact and frees the fp32 dW between forward and backward. Peak memory is one
chunk of logits plus dW, independent of tokens × vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from higgs_ds.constants import IGNORE_INDEX

# Logit elements per chunk (fp32: 64 MiB on CPU, 256 MiB on GPU where wider GEMMs pay off).
CPU_CHUNK_ELEMENTS = 1 << 24
CUDA_CHUNK_ELEMENTS = 1 << 26


class ChunkOps(NamedTuple):
    """stats(logits [n,K,C], targets [n,K], weights [K]|None) -> (lse [n,K], loss [K], valid [K], correct [K]);
    grad_(logits, targets, lse, scale [K]) overwrites logits with scale_k * (softmax - onehot)."""

    stats: Callable
    grad_: Callable


def torch_ce_stats(logits, targets, codebook_weights=None):
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    valid = targets != IGNORE_INDEX
    target_logit = x.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    loss = torch.where(valid, lse - target_logit, 0.0)
    if codebook_weights is not None:
        loss = loss * codebook_weights.float()
    correct = (x.argmax(-1) == targets) & valid
    return lse, loss.sum(0), valid.sum(0).float(), correct.sum(0).float()


def torch_ce_grad_(logits, targets, lse, scale):
    x = logits.float()  # aliases `logits` when it is fp32: then everything below is in place
    x.sub_(lse.unsqueeze(-1)).exp_()
    valid = targets != IGNORE_INDEX
    x.scatter_add_(-1, targets.clamp_min(0).unsqueeze(-1), -valid.unsqueeze(-1).to(x.dtype))
    x.mul_((valid * scale.float()).unsqueeze(-1))
    if x.data_ptr() != logits.data_ptr():
        logits.copy_(x)
    return logits


TORCH_CHUNK_OPS = ChunkOps(torch_ce_stats, torch_ce_grad_)


def rows_per_chunk(n_rows: int, row_width: int, device: torch.device) -> int:
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else CPU_CHUNK_ELEMENTS
    return max(1, min(n_rows, budget // row_width))


def _accumulate_weight_grad(grad_weight, grad_logits, hidden_rows):
    """grad_weight (fp32) += grad_logitsᵀ @ hidden_rows, without a full-size low-precision temp."""
    if grad_logits.dtype == torch.float32:
        grad_weight.addmm_(grad_logits.t(), hidden_rows)
    elif grad_weight.is_cuda:
        # addmm_ has no out_dtype; the out= form of the dtype overload accumulates in place.
        torch.addmm(grad_weight, grad_logits.t(), hidden_rows, out_dtype=torch.float32, out=grad_weight)
    else:  # CPU has no mixed-dtype addmm: upcast the chunk (chunk-sized temporaries only)
        grad_weight.addmm_(grad_logits.t().float(), hidden_rows.float())


class ChunkedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, codebook_weights, ops: ChunkOps):
        n_books = targets.shape[1]
        # The one host sync of the loss: the number of labelled rows sizes the chunk loop.
        rows = (targets != IGNORE_INDEX).any(dim=1).nonzero().squeeze(1)
        row_targets = targets.index_select(0, rows)
        step = rows_per_chunk(rows.numel(), weight.shape[0], hidden.device)
        lse = torch.empty(rows.numel(), n_books, device=hidden.device, dtype=torch.float32)
        sums = [torch.zeros(n_books, device=hidden.device, dtype=torch.float32) for _ in range(3)]
        with torch.no_grad():
            for start in range(0, rows.numel(), step):
                chunk = slice(start, start + step)
                logits = hidden.index_select(0, rows[chunk]) @ weight.t()
                lse[chunk], *chunk_sums = ops.stats(
                    logits.view(logits.shape[0], n_books, -1), row_targets[chunk], codebook_weights)
                for total, part in zip(sums, chunk_sums, strict=True):
                    total += part
        ctx.save_for_backward(hidden, weight, rows, row_targets, lse, codebook_weights)
        ctx.ops, ctx.step = ops, step
        loss_sum, n_valid, n_correct = sums
        ctx.mark_non_differentiable(n_valid, n_correct)
        return loss_sum, n_valid, n_correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_valid, _grad_correct):
        hidden, weight, rows, row_targets, lse, codebook_weights = ctx.saved_tensors
        n_books = row_targets.shape[1]
        scale = grad_loss.float()
        if codebook_weights is not None:
            scale = scale * codebook_weights.float()
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_rows = torch.empty(rows.numel(), hidden.shape[1], device=hidden.device,
                                dtype=hidden.dtype) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        for start in range(0, rows.numel(), ctx.step):
            chunk = slice(start, start + ctx.step)
            hidden_rows = hidden.index_select(0, rows[chunk])
            logits = hidden_rows @ weight.t()
            ctx.ops.grad_(logits.view(logits.shape[0], n_books, -1), row_targets[chunk],
                          lse[chunk], scale)
            if need_hidden:
                torch.mm(logits, weight, out=grad_rows[chunk])
            if need_weight:
                _accumulate_weight_grad(grad_weight, logits, hidden_rows)
        grad_hidden = None
        if need_hidden:
            grad_hidden = torch.zeros_like(hidden).index_copy_(0, rows, grad_rows)
        if need_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights=None,
                                          ops: ChunkOps = TORCH_CHUNK_OPS):
    """hidden [N, H], weight [K*C, H], targets [N, K] -> fp32 (loss_sum, n_valid, n_correct), each [K]."""
    if codebook_weights is not None:
        codebook_weights = codebook_weights.float().contiguous()
    return ChunkedLinearCrossEntropyFunction.apply(hidden, weight, targets.contiguous(),
                                                   codebook_weights, ops)


def chunked_linear_cross_entropy(hidden, weight, targets, ops: ChunkOps = TORCH_CHUNK_OPS):
    """Text head: hidden [N, H], weight [V, H], targets [N] -> fp32 0-dim (loss_sum, n_valid, n_correct)."""
    loss_sum, n_valid, n_correct = chunked_codebook_linear_cross_entropy(
        hidden, weight, targets.reshape(-1, 1), None, ops)
    return loss_sum.squeeze(0), n_valid.squeeze(0), n_correct.squeeze(0)
