"""A whole DualFFN decoder layer, ours vs transformers' `HiggsAudioV2DecoderLayer`, same weights.

Ours routes through `higgs_ds.ops.routed_ffn` (Triton on CUDA, the PyTorch reference on CPU);
transformers' layer does boolean indexing with in-place masked adds. Forward + backward with 40% audio
tokens. Attention is the same Llama attention in both, so the difference is the routing.
"""

import pytest
import torch
from transformers.models.higgs_audio_v2.modeling_higgs_audio_v2 import HiggsAudioV2DecoderLayer

from higgs_ds.models.higgs_v2.checkpoint import ours_to_hf
from higgs_ds.models.higgs_v2.config import tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from tests.benchmarks.kernel_bench_utils import DEVICE, RatioTable, peak_memory_mib, pick_shape, report, timed

pytestmark = pytest.mark.benchmark

SHAPE = pick_shape(full=dict(batch=4, seq=2048, h=3072, i=8192, heads=24, kv=8, dtype=torch.bfloat16),
                   cpu=dict(batch=2, seq=512, h=768, i=2048, heads=12, kv=4, dtype=torch.float32),
                   tiny=dict(batch=1, seq=32, h=64, i=128, heads=4, kv=2, dtype=torch.float32))
AUDIO_FRACTION = 0.4


@pytest.fixture(scope="module")
def layers():
    torch.manual_seed(0)
    s = SHAPE
    cfg = tiny_config(vocab_size=1024, hidden_size=s["h"], intermediate_size=s["i"], num_hidden_layers=1,
                      num_attention_heads=s["heads"], num_key_value_heads=s["kv"], head_dim=s["h"] // s["heads"])
    model = HiggsAudioModel(cfg).to(DEVICE, s["dtype"])
    theirs = HiggsAudioV2DecoderLayer(cfg.to_hf_port_config(), 0).to(DEVICE, s["dtype"])
    prefix = "model.layers.0."
    theirs.load_state_dict({k[len(prefix):]: v for k, v in ours_to_hf(model.state_dict()).items()
                            if k.startswith(prefix)})
    return model, theirs


@pytest.fixture(scope="module")
def table(request):
    table = RatioTable("decoder_layer", f"DualFFN decoder layer fwd+bwd, {AUDIO_FRACTION:.0%} audio ({DEVICE}, "
                                        f"{ {k: v for k, v in SHAPE.items() if k != 'dtype'} })")
    yield table
    report(request, table, DEVICE)


@pytest.mark.parametrize("impl", ["ours", "transformers HiggsAudioV2DecoderLayer"])
def test_decoder_layer(benchmark, table, layers, impl):
    benchmark.group = "decoder-layer"
    model, theirs = layers
    s = SHAPE
    hidden = torch.randn(s["batch"], s["seq"], s["h"], device=DEVICE, dtype=s["dtype"], requires_grad=True)
    mask = torch.rand(s["batch"], s["seq"], device=DEVICE) < AUDIO_FRACTION
    positions = torch.arange(s["seq"], device=DEVICE)[None].expand(s["batch"], -1)
    rope = model.rotary_emb(hidden, positions)
    causal = torch.ones(s["seq"], s["seq"], dtype=torch.bool, device=DEVICE).tril()[None, None]
    causal = causal.expand(s["batch"], 1, -1, -1)
    if impl == "ours":
        fn = lambda: model.layers[0](hidden, mask, causal, None, rope)  # noqa: E731
        params = list(model.layers[0].parameters())
    else:
        fn = lambda: theirs(hidden, rope, attention_mask=causal, audio_token_mask=mask)  # noqa: E731
        params = list(theirs.parameters())

    def step():
        hidden.grad = None
        for p in params:
            p.grad = None
        fn().float().sum().backward()

    mib = peak_memory_mib(step, DEVICE)
    table.add(impl, timed(benchmark, step, DEVICE, rounds=3), mib)
    benchmark.extra_info.update(impl=impl, peak_mib=mib)
