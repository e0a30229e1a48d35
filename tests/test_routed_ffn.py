"""The routed reference equals compute-both-MLPs-and-select, forward and backward."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from higgs_ds.ops import reference


def _modules(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48)
    mods = [LlamaRMSNorm(32), LlamaMLP(cfg), LlamaRMSNorm(32), LlamaMLP(cfg)]
    for n in (mods[0], mods[2]):
        n.weight.data.uniform_(0.5, 1.5)
    return mods


def _both_and_select(h, mask, tn, tm, an, am):
    return torch.where(mask.unsqueeze(-1), h + am(an(h)), h + tm(tn(h)))


@pytest.mark.parametrize("audio_fraction", [0.0, 0.4, 1.0])
def test_routed_matches_both_and_select(audio_fraction):
    mods = _modules()
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 17, 32, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 17, generator=g) < audio_fraction
    mods = [m.double() for m in mods]

    h1 = h.clone().requires_grad_()
    out1 = reference.routed_ffn(h1, mask, *mods)
    grad_out = torch.randn_like(out1)
    grads1 = torch.autograd.grad(out1, [h1, *[p for m in mods for p in m.parameters()]], grad_out)

    h2 = h.clone().requires_grad_()
    out2 = _both_and_select(h2, mask, *mods)
    grads2 = torch.autograd.grad(out2, [h2, *[p for m in mods for p in m.parameters()]], grad_out)

    torch.testing.assert_close(out1, out2, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads1, grads2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_each_mlp_sees_only_its_tokens():
    mods = _modules()
    seen = {}
    for name, m in (("text", mods[1]), ("audio", mods[3])):
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].shape[0]))
    mask = torch.tensor([[True, False, False, True, False]])
    reference.routed_ffn(torch.randn(1, 5, 32), mask, *mods)
    assert seen == {"text": 3, "audio": 2}
