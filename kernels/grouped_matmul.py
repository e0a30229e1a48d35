"""Two-expert grouped GEMM building blocks for the routed FFN.

Rows are in *grouped order*: the `n_text` text tokens first, then the audio tokens. `n_text` lives in
device memory, so no launch needs a host sync. A launch uses an upper-bound grid of
`cdiv(T, BLOCK_M) + 1` row tiles (text tiles first, then audio tiles, never mixed); the surplus
tiles find an empty row range and exit early.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from higgs_ds.kernels import runtime


@triton.jit
def expert_row_tile(pid_m, count_ptr, n_rows, BLOCK_M: tl.constexpr):
    """Map a row-tile id to (is_audio, row offsets, row mask) in grouped order."""
    n_text = tl.load(count_ptr)
    text_tiles = tl.cdiv(n_text, BLOCK_M)
    is_audio = pid_m >= text_tiles
    start = tl.where(is_audio, n_text + (pid_m - text_tiles) * BLOCK_M, pid_m * BLOCK_M)
    end = tl.where(is_audio, n_rows, n_text)
    rows = start + tl.arange(0, BLOCK_M)
    return is_audio, start < end, rows, rows < end


@triton.jit
def tile_matmul(
    acc, a_ptr, a_rows, row_mask, stride_am, w_ptr, offs_n, n_mask, stride_wn, stride_wk, K,
    BLOCK_K: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """acc += A[a_rows, :K] @ W[:K, offs_n], where W[k, n] sits at w_ptr + n*stride_wn + k*stride_wk."""
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        a = tl.load(
            a_ptr + a_rows[:, None] * stride_am + offs_k[None, :],
            mask=row_mask[:, None] & k_mask[None, :], other=0.0,
        )
        w = tl.load(
            w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
            mask=k_mask[:, None] & n_mask[None, :], other=0.0,
        )
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    return acc


@triton.jit
def expert_matmul(
    is_audio, a_ptr, a_rows, row_mask, stride_am, w_text_ptr, w_audio_ptr, offs_n, n_mask,
    stride_wn, stride_wk, K,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One output tile of A @ W_expert with the expert picked per tile (tiles never mix experts)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if is_audio:
        acc = tile_matmul(acc, a_ptr, a_rows, row_mask, stride_am, w_audio_ptr, offs_n, n_mask,
                          stride_wn, stride_wk, K, BLOCK_K, UPCAST, PRECISION)
    else:
        acc = tile_matmul(acc, a_ptr, a_rows, row_mask, stride_am, w_text_ptr, offs_n, n_mask,
                          stride_wn, stride_wk, K, BLOCK_K, UPCAST, PRECISION)
    return acc


@triton.jit
def _expert_weight_grad_kernel(
    a_ptr, order_ptr, b_ptr, count_ptr, out_text_ptr, out_audio_ptr, n_rows, M, N,
    GATHER_A: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """out_e[m, n] = sum over expert e's grouped rows i of A[row(i), m] * B[i, n].

    Each expert reduces over its own contiguous segment: no atomics, deterministic.
    """
    expert = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    n_text = tl.load(count_ptr)
    start = tl.where(expert == 1, n_text, 0)
    end = tl.where(expert == 1, n_rows, n_text)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(start, end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < end
        if GATHER_A:  # noqa: SIM108 - a constexpr branch: only one side is compiled
            a_rows = tl.load(order_ptr + offs_k, mask=k_mask, other=0)
        else:
            a_rows = offs_k
        a_t = tl.load(a_ptr + a_rows[None, :] * M + offs_m[:, None],
                      mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(b_ptr + offs_k[:, None] * N + offs_n[None, :],
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:
            a_t = a_t.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a_t, b, acc, input_precision=PRECISION)
    out_offs = offs_m[:, None] * N + offs_n[None, :]
    out_mask = m_mask[:, None] & n_mask[None, :]
    if expert == 1:
        tl.store(out_audio_ptr + out_offs, acc.to(out_audio_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(out_text_ptr + out_offs, acc.to(out_text_ptr.dtype.element_ty), mask=out_mask)


def expert_weight_grads(
    a: torch.Tensor, b: torch.Tensor, n_text: torch.Tensor, weight_dtype: torch.dtype,
    order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-expert A_eᵀ @ B_e over the grouped segments; A's rows are gathered through `order` if given.

    a: [T, M] (token order if `order` is given, else grouped order); b: [T, N] grouped.
    Returns (text [M, N], audio [M, N]) in `weight_dtype`.
    """
    n_rows, m = a.shape
    n = b.shape[1]
    out_text = torch.empty(m, n, device=a.device, dtype=weight_dtype)
    out_audio = torch.empty_like(out_text)
    block_m, block_n, block_k = runtime.matmul_blocks()
    grid = (2, triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _expert_weight_grad_kernel[grid](
        a, order if order is not None else n_text, b, n_text, out_text, out_audio, n_rows, m, n,
        GATHER_A=order is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        UPCAST=runtime.dot_upcast(a.dtype), PRECISION=runtime.dot_precision(),
    )
    return out_text, out_audio
