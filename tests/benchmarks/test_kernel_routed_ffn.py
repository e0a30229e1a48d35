"""Routed DualFFN vs compute-both-and-select and vs the transformers HiggsAudioV2 layer's routing.

`ours` is `higgs_ds.ops.routed_ffn` on the default backend (Triton on CUDA; on CPU the PyTorch
reference: prefix-free `nonzero` partition + index_select + index_add). Forward + backward with 40%
audio tokens, as in a TTS batch.
"""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from higgs_ds import ops
from tests.benchmarks.kernel_bench_utils import DEVICE, RatioTable, peak_memory_mib, pick_shape, report, timed

pytestmark = pytest.mark.benchmark

# Higgs Audio v2 (Llama-3.2-3B backbone) is H=3072, I=8192; the smaller shapes keep its I/H ratio.
SHAPE = pick_shape(full=dict(tokens=8192, h=3072, i=8192, dtype=torch.bfloat16),
                   cpu=dict(tokens=1024, h=768, i=2048, dtype=torch.float32),
                   tiny=dict(tokens=64, h=48, i=128, dtype=torch.float32))
AUDIO_FRACTION = 0.4


def compute_both_and_select(hidden, mask, text_norm, text_mlp, audio_norm, audio_mlp):
    """Both experts on every token, then a select: the FLOP-doubling baseline."""
    text = text_mlp(text_norm(hidden))
    audio = audio_mlp(audio_norm(hidden))
    return hidden + torch.where(mask.unsqueeze(-1), audio, text)


def transformers_layer_routing(hidden, mask, text_norm, text_mlp, audio_norm, audio_mlp):
    """The FFN half of `HiggsAudioV2DecoderLayer.forward` (transformers 5.23,
    models/higgs_audio_v2/modeling_higgs_audio_v2.py): boolean indexing, then in-place masked adds.
    The layer adds into its fresh `residual + attn` tensor; the clone stands in for that tensor."""
    hidden_states = hidden.clone()
    text_hidden_states = text_norm(hidden_states[~mask])
    audio_hidden_states = audio_norm(hidden_states[mask])
    text_hidden_states = text_mlp(text_hidden_states)
    hidden_states[~mask] += text_hidden_states
    audio_hidden_states = audio_mlp(audio_hidden_states)
    hidden_states[mask] += audio_hidden_states
    return hidden_states


IMPLS = {
    "ours": ops.routed_ffn,
    "compute-both-and-select": compute_both_and_select,
    "transformers HiggsAudioV2 routing": transformers_layer_routing,
}


@pytest.fixture(scope="module")
def table(request):
    table = RatioTable("routed_ffn", f"Routed DualFFN fwd+bwd, {AUDIO_FRACTION:.0%} audio ({DEVICE}, {SHAPE})")
    yield table
    report(request, table, DEVICE)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_routed_ffn(benchmark, table, impl):
    benchmark.group = "routed-ffn"
    torch.manual_seed(0)
    h, dtype = SHAPE["h"], SHAPE["dtype"]
    config = LlamaConfig(hidden_size=h, intermediate_size=SHAPE["i"], hidden_act="silu", num_attention_heads=8)
    mods = [m.to(DEVICE, dtype) for m in (LlamaRMSNorm(h), LlamaMLP(config), LlamaRMSNorm(h), LlamaMLP(config))]
    hidden = torch.randn(SHAPE["tokens"], h, device=DEVICE, dtype=dtype, requires_grad=True)
    mask = torch.rand(SHAPE["tokens"], device=DEVICE) < AUDIO_FRACTION
    fn = IMPLS[impl]

    def step():
        hidden.grad = None
        for m in mods:
            m.zero_grad(set_to_none=True)
        fn(hidden, mask, *mods).sum().backward()

    mib = peak_memory_mib(step, DEVICE)
    table.add(impl, timed(benchmark, step, DEVICE, rounds=5), mib)
    benchmark.extra_info.update(impl=impl, peak_mib=mib)
