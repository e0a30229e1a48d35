"""Fused head + CE vs naive PyTorch, torch's native `F.linear_cross_entropy` and Liger's FLCE.

`ours` is `higgs_ds.ops` on the default backend: the Triton kernels on CUDA, the chunked PyTorch
path on CPU. Each impl runs forward + backward; every row is labelled (no compaction advantage).
"""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from higgs_ds import ops
from higgs_ds.ops import reference
from tests.benchmarks.kernel_bench_utils import DEVICE, RatioTable, peak_memory_mib, pick_shape, report, timed

pytestmark = pytest.mark.benchmark

# "cpu": V is the real text vocabulary; N and H are scaled so naive fits next to other jobs in 24 GiB.
TEXT = pick_shape(full=dict(n=8192, h=3072, v=128256, dtype=torch.bfloat16),
                  cpu=dict(n=4096, h=128, v=128256, dtype=torch.float32),
                  tiny=dict(n=64, h=32, v=1000, dtype=torch.float32))
AUDIO = pick_shape(full=dict(n=8192, h=3072, k=8, c=1026, dtype=torch.bfloat16),
                   cpu=dict(n=4096, h=128, k=8, c=1026, dtype=torch.float32),
                   tiny=dict(n=64, h=32, k=8, c=1026, dtype=torch.float32))


def _liger_text(hidden, weight, targets):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return (liger_fused_linear_cross_entropy(hidden, weight, targets, reduction="sum"),)


TEXT_IMPLS = {
    "ours": ops.linear_cross_entropy,
    "naive": reference.linear_cross_entropy_naive,
    "torch F.linear_cross_entropy": lambda h, w, t: (F.linear_cross_entropy(h, w, t, reduction="sum"),),
    "liger FLCE": _liger_text,
}
AUDIO_IMPLS = {"ours": ops.codebook_linear_cross_entropy, "naive": reference.codebook_linear_cross_entropy_naive}


@pytest.fixture(scope="module")
def text_table(request):
    table = RatioTable("text_head_ce", f"Text head + CE fwd+bwd ({DEVICE}, {TEXT})")
    yield table
    report(request, table, DEVICE)


@pytest.fixture(scope="module")
def audio_table(request):
    table = RatioTable("audio_head_ce", f"Audio head + 8-codebook CE fwd+bwd ({DEVICE}, {AUDIO})")
    yield table
    report(request, table, DEVICE)


def _fwd_bwd(fn, hidden, weight, targets):
    def step():
        hidden.grad = weight.grad = None
        fn(hidden, weight, targets)[0].sum().backward()

    return step


def _leaf(*shape, dtype, scale=1.0):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype).requires_grad_(True)


@pytest.mark.parametrize("impl", list(TEXT_IMPLS))
def test_text_head_ce(benchmark, text_table, impl):
    if impl == "liger FLCE" and DEVICE != "cuda":
        pytest.skip("Liger's fused linear CE is Triton-only: it needs CUDA")
    if impl == "liger FLCE" and importlib.util.find_spec("liger_kernel") is None:
        pytest.skip("liger-kernel is not installed")
    if impl == "torch F.linear_cross_entropy" and not hasattr(F, "linear_cross_entropy"):
        pytest.skip(f"torch {torch.__version__} has no F.linear_cross_entropy")
    benchmark.group = "text-head-ce"
    n, h, v, dtype = TEXT["n"], TEXT["h"], TEXT["v"], TEXT["dtype"]
    hidden, weight = _leaf(n, h, dtype=dtype), _leaf(v, h, dtype=dtype, scale=h**-0.5)
    targets = torch.randint(0, v, (n,), device=DEVICE)
    step = _fwd_bwd(TEXT_IMPLS[impl], hidden, weight, targets)
    mib = peak_memory_mib(step, DEVICE)
    text_table.add(impl, timed(benchmark, step, DEVICE, rounds=2), mib)
    benchmark.extra_info.update(impl=impl, peak_mib=mib)


@pytest.mark.parametrize("impl", list(AUDIO_IMPLS))
def test_audio_head_ce(benchmark, audio_table, impl):
    benchmark.group = "audio-head-ce"
    n, h, k, c, dtype = AUDIO["n"], AUDIO["h"], AUDIO["k"], AUDIO["c"], AUDIO["dtype"]
    hidden, weight = _leaf(n, h, dtype=dtype), _leaf(k * c, h, dtype=dtype, scale=h**-0.5)
    targets = torch.randint(0, c, (n, k), device=DEVICE)
    step = _fwd_bwd(AUDIO_IMPLS[impl], hidden, weight, targets)
    mib = peak_memory_mib(step, DEVICE)
    audio_table.add(impl, timed(benchmark, step, DEVICE), mib)
    benchmark.extra_info.update(impl=impl, peak_mib=mib)
