"""Routed SwiGLU FFN kernels vs the PyTorch reference (fp64 truth, CCE-style tolerance)."""

import copy

import pytest
import torch
from higgs_ds.kernels.routed_ffn import partition_by_mask
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from higgs_ds import ops
from higgs_ds.ops import reference
from tests.kernels.tolerance import DEVICE, assert_no_worse_than_torch

HIDDEN, INTER = 64, 96


def _experts(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER, hidden_act="silu", rms_norm_eps=1e-5)
    mods = [LlamaRMSNorm(HIDDEN, eps=1e-5), LlamaMLP(config), LlamaRMSNorm(HIDDEN, eps=1e-6), LlamaMLP(config)]
    for norm in mods[0::2]:
        norm.weight.data.uniform_(0.5, 1.5)  # distinct per expert, so a swapped norm would show
    return [m.to(DEVICE) for m in mods]


def _run(fn, x, mask, mods, grad_out):
    x = x.detach().clone().requires_grad_(True)
    for m in mods:
        m.zero_grad(set_to_none=True)
    out = fn(x, mask, *mods)
    out.backward(grad_out.to(out.dtype))
    return [out, x.grad] + [p.grad for m in mods for p in m.parameters()]


MASKS = {
    "ragged_40pct_audio": lambda t: torch.rand(t) < 0.4,
    "zero_audio": lambda t: torch.zeros(t, dtype=torch.bool),
    "zero_text": lambda t: torch.ones(t, dtype=torch.bool),
    "alternating": lambda t: torch.arange(t) % 2 == 1,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tokens", [77, 1])
@pytest.mark.parametrize("mask_kind", sorted(MASKS))
def test_routed_ffn_matches_reference(triton_backend, dtype, tokens, mask_kind):
    mods64 = _experts()
    torch.manual_seed(1)
    x = torch.randn(tokens, HIDDEN, device=DEVICE)
    mask = MASKS[mask_kind](tokens).to(DEVICE)
    grad_out = torch.randn(tokens, HIDDEN, device=DEVICE)
    mods = [copy.deepcopy(m).to(dtype) for m in mods64]
    ours = _run(ops.routed_ffn, x.to(dtype), mask, mods, grad_out)
    mods_ref = [copy.deepcopy(m).to(dtype) for m in mods64]
    torch_same = _run(reference.routed_ffn, x.to(dtype), mask, mods_ref, grad_out)
    mods_truth = [copy.deepcopy(m).double() for m in mods64]
    truth = _run(reference.routed_ffn, x.double(), mask, mods_truth, grad_out.double())
    names = ["out", "dx"] + [f"{i}.{n}" for i, m in enumerate(mods) for n, _ in m.named_parameters()]
    for name, o, r, t in zip(names, ours, torch_same, truth, strict=True):
        assert o.dtype == r.dtype, name
        assert_no_worse_than_torch(o, r, t, dtype, name)


def test_routed_ffn_takes_the_triton_path(triton_backend, monkeypatch):
    """The dispatch must not silently fall back to the reference when Triton is forced."""
    monkeypatch.setattr(reference, "routed_ffn", lambda *a: pytest.fail("reference path used"))
    x = torch.randn(5, HIDDEN, device=DEVICE)
    out = ops.routed_ffn(x, torch.tensor([1, 0, 0, 1, 1], dtype=torch.bool, device=DEVICE), *_experts())
    assert out.shape == x.shape


def test_routed_ffn_empty_batch_keeps_every_weight_in_the_graph(triton_backend):
    mods = _experts()
    x = torch.zeros(0, HIDDEN, device=DEVICE, requires_grad=True)
    ops.routed_ffn(x, torch.zeros(0, dtype=torch.bool, device=DEVICE), *mods).sum().backward()
    assert all(p.grad is not None and not p.grad.any() for m in mods for p in m.parameters())


def test_partition_is_stable_text_first_without_host_sync():
    mask = torch.tensor([1, 0, 0, 1, 0, 1, 1, 0], dtype=torch.bool, device=DEVICE)
    order, n_text = partition_by_mask(mask)
    assert n_text.device == mask.device and n_text.tolist() == [4]
    assert order.tolist() == [1, 2, 4, 7, 0, 3, 5, 6]
