"""Fused multi-codebook cross-entropy with ignore-index (-100).

Logits [N, K, C] and targets [N, K]. One program handles BLOCK_N rows of one codebook (a 2D block,
which is also what keeps the interpreter fast) and streams over C with an fp32 online softmax. It
writes the row LSE, the gradient `w_k * (softmax - onehot)` (so the backward only scales it), and
per-program partial sums of loss, valid count and correct count per codebook. The partials are
summed with one deterministic `sum`: no atomics, no host sync, and an all-ignored batch gives exact
zeros. The text head reuses the same kernels with K = 1 and C = V.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from higgs_ds.kernels import runtime

from higgs_ds.constants import IGNORE_INDEX

_IGNORE = tl.constexpr(IGNORE_INDEX)
# A finite "minus infinity": padded lanes and rows never produce inf - inf = NaN.
_NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _rows_of_codebook(targets_ptr, stride_tn, N, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    target = tl.load(targets_ptr + rows * stride_tn + tl.program_id(1), mask=row_mask,
                     other=_IGNORE).to(tl.int32)
    return rows, row_mask, target, row_mask & (target != _IGNORE)


@triton.jit
def _store_grad(logits_ptr, grad_ptr, rows, row_mask, target, lse, row_scale, stride_n, C,
                BLOCK_C: tl.constexpr):
    """grad[row, c] = row_scale * (exp(x - lse) - [c == target]), computed in fp32 from the logits."""
    k = tl.program_id(1)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        offs = rows[:, None] * stride_n + k * C + cols[None, :]
        x = tl.where(mask, tl.load(logits_ptr + offs, mask=mask, other=0.0).to(tl.float32), _NEG_BIG)
        prob = tl.exp(x - lse[:, None])
        grad = (prob - tl.where(cols[None, :] == target[:, None], 1.0, 0.0)) * row_scale[:, None]
        tl.store(grad_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _codebook_ce_fwd_kernel(
    logits_ptr, targets_ptr, weights_ptr, grad_ptr, lse_ptr, partial_ptr,
    N, K, C, stride_n, stride_tn,
    HAS_WEIGHTS: tl.constexpr, WRITE_GRAD: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    k = tl.program_id(1)
    rows, row_mask, target, valid = _rows_of_codebook(targets_ptr, stride_tn, N, BLOCK_N)
    run_max = tl.full((BLOCK_N,), _NEG_BIG, dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_N,), dtype=tl.float32)
    best_idx = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(logits_ptr + rows[:, None] * stride_n + k * C + cols[None, :], mask=mask, other=0.0)
        # Pad after the fp32 upcast: -1e30 would overflow to -inf in a 16-bit load.
        x = tl.where(mask, x.to(tl.float32), _NEG_BIG)
        block_max, block_arg = tl.max(x, axis=1, return_indices=True, return_indices_tie_break_left=True)
        # Strictly greater keeps the first maximum, like torch.argmax.
        best_idx = tl.where(block_max > run_max, c0 + block_arg, best_idx)
        new_max = tl.maximum(run_max, block_max)
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max[:, None]), axis=1)
        run_max = new_max
        target_logit += tl.sum(tl.where(cols[None, :] == target[:, None], x, 0.0), axis=1)
    lse = run_max + tl.log(run_sum)
    if HAS_WEIGHTS:  # noqa: SIM108 - a constexpr branch: only one side is compiled
        weight = tl.load(weights_ptr + k).to(tl.float32)
    else:
        weight = 1.0
    row_scale = tl.where(valid, weight, 0.0)
    loss = tl.where(valid, (lse - target_logit) * row_scale, 0.0)
    tl.store(lse_ptr + rows * K + k, lse, mask=row_mask)
    partial = partial_ptr + tl.program_id(0) * 3 * K + k
    tl.store(partial, tl.sum(loss, axis=0))
    tl.store(partial + K, tl.sum(valid.to(tl.float32), axis=0))
    tl.store(partial + 2 * K, tl.sum((valid & (best_idx == target)).to(tl.float32), axis=0))
    if WRITE_GRAD:
        _store_grad(logits_ptr, grad_ptr, rows, row_mask, target, lse, row_scale, stride_n, C, BLOCK_C)


@triton.jit
def _codebook_ce_grad_kernel(
    logits_ptr, targets_ptr, lse_ptr, scale_ptr, N, K, C, stride_n, stride_tn,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """In place: logits <- scale_k * (softmax - onehot) from a saved LSE (fused-head backward)."""
    k = tl.program_id(1)
    rows, row_mask, target, valid = _rows_of_codebook(targets_ptr, stride_tn, N, BLOCK_N)
    lse = tl.load(lse_ptr + rows * K + k, mask=row_mask, other=0.0)
    row_scale = tl.where(valid, tl.load(scale_ptr + k), 0.0)
    _store_grad(logits_ptr, logits_ptr, rows, row_mask, target, lse, row_scale, stride_n, C, BLOCK_C)


def _blocks(n_classes: int) -> tuple[int, int]:
    """Rows per program and class-block width: 2D blocks of rows, whole 1026-wide rows in the interpreter.

    On a GPU, 4 x 2048 blocks need 64 fp32 values per thread per tile and ptxas spilled up to 376 bytes
    at 255 registers (scripts/kernels_aot); 4 x 1024 needs at most 183 and spills nowhere in the loop."""
    if runtime.INTERPRET:
        return 64, min(triton.next_power_of_2(n_classes), 8192)
    return 4, min(triton.next_power_of_2(n_classes), 1024)


def codebook_ce_stats(logits, targets, codebook_weights=None, grad=None):
    """logits [N, K, C] (contiguous), targets [N, K]. Optionally writes the gradient into `grad`.

    Returns (lse [N, K] fp32, loss_sum [K], n_valid [K], n_correct [K]), sums in fp32;
    loss_sum is weighted by `codebook_weights` when given.
    """
    n_rows, n_books, n_classes = logits.shape
    block_n, block_c = _blocks(n_classes)
    n_blocks = triton.cdiv(n_rows, block_n)
    lse = torch.empty(n_rows, n_books, device=logits.device, dtype=torch.float32)
    partial = torch.zeros(max(n_blocks, 1), 3, n_books, device=logits.device, dtype=torch.float32)
    if n_rows > 0:
        _codebook_ce_fwd_kernel[(n_blocks, n_books)](
            logits, targets, codebook_weights if codebook_weights is not None else lse,
            grad if grad is not None else logits, lse, partial,
            n_rows, n_books, n_classes, logits.stride(0), targets.stride(0),
            HAS_WEIGHTS=codebook_weights is not None, WRITE_GRAD=grad is not None,
            BLOCK_N=block_n, BLOCK_C=block_c,
        )
    # Three separate reductions, not views of one tensor: autograd outputs must not share a base.
    loss_sum, n_valid, n_correct = (partial[:, i].sum(0) for i in range(3))
    return lse, loss_sum, n_valid, n_correct


def codebook_ce_grad_(logits, targets, lse, scale):
    """Overwrite logits [N, K, C] with `scale[k] * (softmax - onehot)` (0 on ignored rows)."""
    n_rows, n_books, n_classes = logits.shape
    if n_rows == 0:
        return logits
    block_n, block_c = _blocks(n_classes)
    _codebook_ce_grad_kernel[(triton.cdiv(n_rows, block_n), n_books)](
        logits, targets, lse, scale.float().contiguous(), n_rows, n_books, n_classes,
        logits.stride(0), targets.stride(0), BLOCK_N=block_n, BLOCK_C=block_c,
    )
    return logits


class CodebookCrossEntropyFunction(torch.autograd.Function):
    """Per-codebook CE on materialised logits; the gradient is computed in the forward."""

    @staticmethod
    def forward(ctx, logits, targets, codebook_weights):
        logits = logits.contiguous()
        targets = targets.contiguous()
        grad = torch.empty_like(logits)
        _, loss_sum, n_valid, n_correct = codebook_ce_stats(logits, targets, codebook_weights, grad)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(n_valid, n_correct)
        return loss_sum, n_valid, n_correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_valid, _grad_correct):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.view(1, -1, 1).to(grad.dtype), None, None


def codebook_cross_entropy(logits, targets, codebook_weights=None):
    """logits [N, K, C], targets [N, K] -> fp32 (loss_sum [K], n_valid [K], n_correct [K])."""
    if codebook_weights is not None:
        codebook_weights = codebook_weights.float().contiguous()
    return CodebookCrossEntropyFunction.apply(logits, targets, codebook_weights)
