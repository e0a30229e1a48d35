"""`higgs_ds.ops` dispatch: which implementation runs for each backend setting."""

import pytest
import torch
from higgs_ds.kernels import codebook_ce, fused_head_ce

from higgs_ds import ops
from higgs_ds.ops import reference
from tests.kernels.tolerance import DEVICE


@pytest.fixture
def restore_backend():
    previous = ops.get_backend()
    yield
    ops.set_backend(previous)


def _spy(monkeypatch, calls, module, name):
    """Record every call of module.name into `calls` while still running it."""
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(name) or original(*a, **k))


def test_unknown_backend_is_rejected(restore_backend):
    with pytest.raises(ValueError, match="unknown ops backend"):
        ops.set_backend("cuda")


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
def test_backend_selects_implementation(restore_backend, monkeypatch, backend):
    ops.set_backend(backend)
    assert ops.get_backend() == backend
    kernel_calls, torch_calls = [], []
    _spy(monkeypatch, kernel_calls, fused_head_ce, "linear_cross_entropy")
    _spy(monkeypatch, kernel_calls, codebook_ce, "codebook_cross_entropy")
    _spy(monkeypatch, torch_calls, reference, "linear_cross_entropy")
    _spy(monkeypatch, torch_calls, reference, "codebook_cross_entropy")
    hidden, weight = torch.randn(4, 16, device=DEVICE), torch.randn(40, 16, device=DEVICE)
    ops.linear_cross_entropy(hidden, weight, torch.tensor([1, -100, 3, 39], device=DEVICE))
    ops.codebook_cross_entropy(torch.randn(3, 2, 20, device=DEVICE), torch.zeros(3, 2, dtype=torch.long,
                                                                                   device=DEVICE))
    use_triton = backend == "triton" or (backend == "auto" and DEVICE == "cuda")
    assert (len(kernel_calls), len(torch_calls)) == ((2, 0) if use_triton else (0, 2))


def test_routed_ffn_falls_back_for_a_non_swiglu_mlp(restore_backend, monkeypatch):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    ops.set_backend("triton")
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, hidden_act="gelu")
    mods = [LlamaRMSNorm(16), LlamaMLP(config), LlamaRMSNorm(16), LlamaMLP(config)]
    torch_calls = []
    _spy(monkeypatch, torch_calls, reference, "routed_ffn")
    ops.routed_ffn(torch.randn(3, 16), torch.tensor([True, False, True]), *mods)
    assert torch_calls == ["routed_ffn"]
