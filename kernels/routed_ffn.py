"""Fused routed SwiGLU FFN (Higgs Audio DualFFN): `out = x + mlp_e(norm_e(x))`, e = token's expert.

Forward, all without a host sync:
  1. prefix-sum partition of the audio mask -> `order` (grouped position -> token) and `n_text`;
  2. routed RMSNorm kernel: gather + per-expert norm into one grouped buffer `xn`;
  3. one grouped launch: gate/up projections of both experts + SiLU·mul epilogue;
  4. one grouped launch: down projection + residual add, scattered back to token order.
Backward: down-proj transpose fused with the SwiGLU backward, gate/up transpose, routed RMSNorm
backward (scatter + residual gradient + norm-weight gradients), and per-expert weight gradients
reduced over each expert's contiguous segment.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from higgs_ds.kernels import runtime
from higgs_ds.kernels.grouped_matmul import expert_matmul, expert_row_tile, expert_weight_grads
from higgs_ds.kernels.routed_rmsnorm import routed_rmsnorm_backward, routed_rmsnorm_forward


def partition_by_mask(audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable text-first partition from a prefix sum: no sort, no host sync.

    Returns (order [T] int32: grouped position -> token index, n_text [1] int32 on device).
    """
    mask = audio_mask.reshape(-1).to(torch.int32)
    n_rows = mask.numel()
    positions = torch.arange(n_rows, device=mask.device, dtype=torch.int32)
    audio_seen = torch.cumsum(mask, 0, dtype=torch.int32)  # inclusive count of audio tokens
    n_text = n_rows - audio_seen[-1:]
    dest = torch.where(mask.bool(), n_text + audio_seen - 1, positions - audio_seen)
    order = torch.empty_like(positions).scatter_(0, dest.long(), positions)
    return order, n_text


@triton.jit
def _gate_up_kernel(
    xn_ptr, count_ptr, wg_text, wu_text, wg_audio, wu_audio, gate_ptr, up_ptr, act_ptr,
    n_rows, H, INTER,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    is_audio, nonempty, rows, row_mask = expert_row_tile(tl.program_id(0), count_ptr, n_rows, BLOCK_M)
    if nonempty:
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < INTER
        # W[k, n] = gate_proj.weight[n, k]: weights are [INTER, H].
        gate = expert_matmul(is_audio, xn_ptr, rows, row_mask, H, wg_text, wg_audio, offs_n, n_mask,
                             H, 1, H, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
        up = expert_matmul(is_audio, xn_ptr, rows, row_mask, H, wu_text, wu_audio, offs_n, n_mask,
                           H, 1, H, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
        act = gate * tl.sigmoid(gate) * up
        offs = rows[:, None] * INTER + offs_n[None, :]
        mask = row_mask[:, None] & n_mask[None, :]
        tl.store(gate_ptr + offs, gate.to(gate_ptr.dtype.element_ty), mask=mask)
        tl.store(up_ptr + offs, up.to(up_ptr.dtype.element_ty), mask=mask)
        tl.store(act_ptr + offs, act.to(act_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _down_scatter_kernel(
    act_ptr, order_ptr, count_ptr, wd_text, wd_audio, residual_ptr, out_ptr, n_rows, INTER, H,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    is_audio, nonempty, rows, row_mask = expert_row_tile(tl.program_id(0), count_ptr, n_rows, BLOCK_M)
    if nonempty:
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < H
        # W[k, n] = down_proj.weight[n, k]: weights are [H, INTER].
        y = expert_matmul(is_audio, act_ptr, rows, row_mask, INTER, wd_text, wd_audio, offs_n, n_mask,
                          INTER, 1, INTER, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
        tokens = tl.load(order_ptr + rows, mask=row_mask, other=0)
        offs = tokens[:, None] * H + offs_n[None, :]
        mask = row_mask[:, None] & n_mask[None, :]
        residual = tl.load(residual_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, (residual + y).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _down_bwd_swiglu_kernel(
    dout_ptr, order_ptr, count_ptr, wd_text, wd_audio, gate_ptr, up_ptr, dgate_ptr, dup_ptr,
    n_rows, H, INTER,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """d_act = dout[order] @ W_down_e (gather fused), then the SwiGLU backward in the epilogue."""
    is_audio, nonempty, rows, row_mask = expert_row_tile(tl.program_id(0), count_ptr, n_rows, BLOCK_M)
    if nonempty:
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < INTER
        tokens = tl.load(order_ptr + rows, mask=row_mask, other=0)
        # W[k, n] = down_proj.weight[k, n]: contract over H.
        d_act = expert_matmul(is_audio, dout_ptr, tokens, row_mask, H, wd_text, wd_audio, offs_n,
                              n_mask, 1, INTER, H, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
        offs = rows[:, None] * INTER + offs_n[None, :]
        mask = row_mask[:, None] & n_mask[None, :]
        gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(gate)
        d_gate = d_act * up * sig * (1.0 + gate * (1.0 - sig))
        tl.store(dgate_ptr + offs, d_gate.to(dgate_ptr.dtype.element_ty), mask=mask)
        tl.store(dup_ptr + offs, (d_act * gate * sig).to(dup_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gate_up_bwd_kernel(
    dgate_ptr, dup_ptr, count_ptr, wg_text, wu_text, wg_audio, wu_audio, dxn_ptr, n_rows, INTER, H,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """dxn = d_gate @ W_gate_e + d_up @ W_up_e, in grouped order (fp32 for the norm backward)."""
    is_audio, nonempty, rows, row_mask = expert_row_tile(tl.program_id(0), count_ptr, n_rows, BLOCK_M)
    if nonempty:
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < H
        # W[k, n] = gate_proj.weight[k, n]: contract over INTER.
        dxn = expert_matmul(is_audio, dgate_ptr, rows, row_mask, INTER, wg_text, wg_audio, offs_n,
                            n_mask, 1, H, INTER, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
        dxn += expert_matmul(is_audio, dup_ptr, rows, row_mask, INTER, wu_text, wu_audio, offs_n,
                             n_mask, 1, H, INTER, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
        tl.store(dxn_ptr + rows[:, None] * H + offs_n[None, :], dxn,
                 mask=row_mask[:, None] & n_mask[None, :])


def _launch(kernel, n_rows: int, n_cols: int, *args) -> None:
    """Upper-bound grid: cdiv(T, BM) + 1 row tiles covers any text/audio split."""
    block_m, block_n, block_k = runtime.matmul_blocks()
    grid = (triton.cdiv(n_rows, block_m) + 1, triton.cdiv(n_cols, block_n))
    kernel[grid](*args, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                 UPCAST=runtime.dot_upcast(args[0].dtype), PRECISION=runtime.dot_precision())


class RoutedSwiGLUFunction(torch.autograd.Function):
    """x [T, H] + per-token expert's SwiGLU(RMSNorm(x)); weights in the layout of nn.Linear."""

    @staticmethod
    def forward(ctx, x, audio_mask, norm_text, norm_audio, eps_text, eps_audio,
                wg_text, wu_text, wd_text, wg_audio, wu_audio, wd_audio):
        n_rows, hidden = x.shape
        inter = wg_text.shape[0]
        order, n_text = partition_by_mask(audio_mask)
        xn, rstd = routed_rmsnorm_forward(x, order, n_text, norm_text, norm_audio,
                                          eps_text, eps_audio, wg_text.dtype)
        gate = torch.empty(n_rows, inter, device=x.device, dtype=x.dtype)
        up, act = torch.empty_like(gate), torch.empty_like(gate)
        _launch(_gate_up_kernel, n_rows, inter, xn, n_text, wg_text, wu_text, wg_audio, wu_audio,
                gate, up, act, n_rows, hidden, inter)
        out = torch.empty_like(x)
        _launch(_down_scatter_kernel, n_rows, hidden, act, order, n_text, wd_text, wd_audio, x, out,
                n_rows, inter, hidden)
        ctx.save_for_backward(x, order, n_text, xn, rstd, gate, up, act, norm_text, norm_audio,
                              wg_text, wu_text, wd_text, wg_audio, wu_audio, wd_audio)
        return out

    @staticmethod
    def backward(ctx, dout):
        (x, order, n_text, xn, rstd, gate, up, act, norm_text, norm_audio,
         wg_text, wu_text, wd_text, wg_audio, wu_audio, wd_audio) = ctx.saved_tensors
        dout = dout.contiguous()
        n_rows, hidden = x.shape
        inter = gate.shape[1]
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        _launch(_down_bwd_swiglu_kernel, n_rows, inter, dout, order, n_text, wd_text, wd_audio,
                gate, up, dgate, dup, n_rows, hidden, inter)
        dxn = torch.empty(n_rows, hidden, device=x.device, dtype=torch.float32)
        _launch(_gate_up_bwd_kernel, n_rows, hidden, dgate, dup, n_text, wg_text, wu_text,
                wg_audio, wu_audio, dxn, n_rows, inter, hidden)
        dx, dnorm_text, dnorm_audio = routed_rmsnorm_backward(
            dxn, x, order, n_text, norm_text, norm_audio, rstd, dout)
        dwd_text, dwd_audio = expert_weight_grads(dout, act, n_text, wd_text.dtype, order=order)
        dwg_text, dwg_audio = expert_weight_grads(dgate, xn, n_text, wg_text.dtype)
        dwu_text, dwu_audio = expert_weight_grads(dup, xn, n_text, wu_text.dtype)
        return (dx, None, dnorm_text, dnorm_audio, None, None,
                dwg_text, dwu_text, dwd_text, dwg_audio, dwu_audio, dwd_audio)


def routed_swiglu_ffn(x, audio_mask, norm_text, norm_audio, eps_text, eps_audio,
                      wg_text, wu_text, wd_text, wg_audio, wu_audio, wd_audio):
    """x: [T, H]; audio_mask: [T] bool. All weights must share x's dtype and be contiguous."""
    if x.shape[0] == 0:
        # Keep every weight in the graph so all ranks see the same parameters used.
        zero = sum(w.sum() for w in (norm_text, norm_audio, wg_text, wu_text, wd_text,
                                      wg_audio, wu_audio, wd_audio)) * 0
        return x + zero.to(x.dtype)
    tensors = [t.contiguous() for t in (x, norm_text, norm_audio, wg_text, wu_text, wd_text,
                                        wg_audio, wu_audio, wd_audio)]
    x, norm_text, norm_audio, *weights = tensors
    return RoutedSwiGLUFunction.apply(x, audio_mask.reshape(-1).contiguous(), norm_text, norm_audio,
                                      eps_text, eps_audio, *weights)
