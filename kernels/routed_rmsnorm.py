"""Routed RMSNorm: gather tokens into grouped order and normalise each with its expert's norm.

Forward writes `xn[i] = w_e * x[order[i]] * rstd[i]` (the input of both experts' gate/up GEMM in one
buffer) and keeps `rstd` for the backward. The backward scatters `dx` back to token order, adds the
residual gradient, and writes per-block partial norm-weight gradients per expert (summed on the host
side with one deterministic `sum`, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from higgs_ds.kernels import runtime


@triton.jit
def _row_block(count_ptr, n_rows, BLOCK_T: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = rows < n_rows
    is_audio = rows >= tl.load(count_ptr)
    return rows, row_mask, is_audio


@triton.jit
def _expert_weight(w_text_ptr, w_audio_ptr, cols, col_mask, is_audio):
    """[BLOCK_T, BLOCK_H] norm weights, each row taking its own expert's weight."""
    w_text = tl.load(w_text_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    w_audio = tl.load(w_audio_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    return tl.where(is_audio[:, None], w_audio[None, :], w_text[None, :])


@triton.jit
def _routed_rmsnorm_fwd_kernel(
    x_ptr, order_ptr, count_ptr, w_text_ptr, w_audio_ptr, eps_text, eps_audio, xn_ptr, rstd_ptr,
    n_rows, H, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows, row_mask, is_audio = _row_block(count_ptr, n_rows, BLOCK_T)
    tokens = tl.load(order_ptr + rows, mask=row_mask, other=0)
    sum_sq = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        cols = h0 + tl.arange(0, BLOCK_H)
        mask = row_mask[:, None] & (cols < H)[None, :]
        x = tl.load(x_ptr + tokens[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        sum_sq += tl.sum(x * x, axis=1)
    # Float scalar args arrive as Python floats under the interpreter: tl.cast, not .to.
    eps = tl.where(is_audio, tl.cast(eps_audio, tl.float32), tl.cast(eps_text, tl.float32))
    rstd = 1.0 / tl.sqrt(sum_sq / H + eps)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)
    for h0 in range(0, H, BLOCK_H):
        cols = h0 + tl.arange(0, BLOCK_H)
        col_mask = cols < H
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + tokens[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = _expert_weight(w_text_ptr, w_audio_ptr, cols, col_mask, is_audio)
        tl.store(xn_ptr + rows[:, None] * H + cols[None, :],
                 (x * rstd[:, None] * w).to(xn_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _routed_rmsnorm_bwd_kernel(
    dxn_ptr, x_ptr, order_ptr, count_ptr, w_text_ptr, w_audio_ptr, rstd_ptr, dres_ptr, dx_ptr,
    dw_part_ptr, n_rows, H, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """dx[token] = dres[token] + rstd * (dx̂ - x̂ * mean(dx̂ · x̂)), with dx̂ = dxn * w_e."""
    rows, row_mask, is_audio = _row_block(count_ptr, n_rows, BLOCK_T)
    tokens = tl.load(order_ptr + rows, mask=row_mask, other=0)
    rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
    dot = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        cols = h0 + tl.arange(0, BLOCK_H)
        col_mask = cols < H
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + tokens[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dxn = tl.load(dxn_ptr + rows[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = _expert_weight(w_text_ptr, w_audio_ptr, cols, col_mask, is_audio)
        dot += tl.sum(dxn * w * x, axis=1)
    mean_dot = dot * rstd * rstd / H
    text_rows = row_mask & (is_audio == 0)
    audio_rows = row_mask & is_audio
    part = dw_part_ptr + tl.program_id(0) * 2 * H
    for h0 in range(0, H, BLOCK_H):
        cols = h0 + tl.arange(0, BLOCK_H)
        col_mask = cols < H
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + tokens[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dxn = tl.load(dxn_ptr + rows[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dres = tl.load(dres_ptr + tokens[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = _expert_weight(w_text_ptr, w_audio_ptr, cols, col_mask, is_audio)
        dx = dres + rstd[:, None] * (dxn * w) - x * mean_dot[:, None] * rstd[:, None]
        tl.store(dx_ptr + tokens[:, None] * H + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw = dxn * x * rstd[:, None]
        tl.store(part + cols, tl.sum(tl.where(text_rows[:, None], dw, 0.0), axis=0), mask=col_mask)
        tl.store(part + H + cols, tl.sum(tl.where(audio_rows[:, None], dw, 0.0), axis=0), mask=col_mask)


def _blocks(hidden_size: int) -> tuple[int, int]:
    block_h = min(triton.next_power_of_2(hidden_size), 1024 if runtime.INTERPRET else 256)
    return (64 if runtime.INTERPRET else 8), block_h


def routed_rmsnorm_forward(x, order, n_text, w_text, w_audio, eps_text, eps_audio, out_dtype):
    """x: [T, H] token order -> (xn [T, H] grouped order in out_dtype, rstd [T] fp32)."""
    n_rows, hidden_size = x.shape
    xn = torch.empty(n_rows, hidden_size, device=x.device, dtype=out_dtype)
    rstd = torch.empty(n_rows, device=x.device, dtype=torch.float32)
    block_t, block_h = _blocks(hidden_size)
    _routed_rmsnorm_fwd_kernel[(triton.cdiv(n_rows, block_t),)](
        x, order, n_text, w_text, w_audio, float(eps_text), float(eps_audio), xn, rstd,
        n_rows, hidden_size, BLOCK_T=block_t, BLOCK_H=block_h,
    )
    return xn, rstd


def routed_rmsnorm_backward(dxn, x, order, n_text, w_text, w_audio, rstd, grad_residual):
    """-> (dx [T, H] token order incl. the residual gradient, dw_text [H], dw_audio [H])."""
    n_rows, hidden_size = x.shape
    block_t, block_h = _blocks(hidden_size)
    n_blocks = triton.cdiv(n_rows, block_t)
    dx = torch.empty_like(x)
    dw_part = torch.empty(n_blocks, 2, hidden_size, device=x.device, dtype=torch.float32)
    _routed_rmsnorm_bwd_kernel[(n_blocks,)](
        dxn, x, order, n_text, w_text, w_audio, rstd, grad_residual, dx, dw_part,
        n_rows, hidden_size, BLOCK_T=block_t, BLOCK_H=block_h,
    )
    dw = dw_part.sum(0)
    return dx, dw[0].to(w_text.dtype), dw[1].to(w_audio.dtype)
