"""Fused head + CE (text and audio heads), Triton and chunked-PyTorch paths, vs the naive math."""

import pytest
import torch
from higgs_ds.kernels import chunked_ce

from higgs_ds import ops
from higgs_ds.ops import reference
from tests.kernels.tolerance import DEVICE, assert_no_worse_than_torch

HIDDEN = 32
N_BOOKS, N_CLASSES = 8, 1026


@pytest.fixture(params=["triton", "torch"])
def backend(request):
    previous = ops.get_backend()
    ops.set_backend(request.param)
    yield request.param
    ops.set_backend(previous)


@pytest.fixture
def small_chunks(monkeypatch):
    """A tiny chunk budget (2 audio rows, 16 rows at V=1000, 1 row at V=128256), so every test
    crosses chunk boundaries."""
    monkeypatch.setattr(chunked_ce, "CPU_CHUNK_ELEMENTS", 2 * N_BOOKS * N_CLASSES)
    monkeypatch.setattr(chunked_ce, "CUDA_CHUNK_ELEMENTS", 2 * N_BOOKS * N_CLASSES)


def _run(fn, hidden, weight, targets, grad_loss, **kwargs):
    hidden = hidden.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    loss_sum, n_valid, n_correct = fn(hidden, weight, targets, **kwargs)
    (loss_sum * grad_loss).sum().backward()
    return loss_sum, n_valid, n_correct, hidden.grad, weight.grad


def _check(ours, same, truth, dtype):
    for name, i in (("loss_sum", 0), ("d_hidden", 3), ("d_weight", 4)):
        assert_no_worse_than_torch(ours[i], same[i], truth[i], dtype, name)
    for i in (1, 2):  # valid / correct counts are exact
        torch.testing.assert_close(ours[i], same[i], rtol=0, atol=0)


def _head(n_rows, n_out, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_rows, HIDDEN, generator=gen)
    weight = torch.randn(n_out, HIDDEN, generator=gen) / HIDDEN**0.5
    return hidden.to(DEVICE), weight.to(DEVICE), gen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1000, 128256])
def test_text_head_matches_naive(backend, small_chunks, dtype, vocab):
    n_rows = 40 if vocab < 10_000 else 6  # 4 of the 6 labelled at V=128256
    hidden, weight, gen = _head(n_rows, vocab, seed=vocab)
    targets = torch.randint(0, vocab, (n_rows,), generator=gen)
    targets[torch.rand(n_rows, generator=gen) < 0.5] = -100  # most rows of a TTS sample are ignored
    targets = targets.to(DEVICE)
    grad = torch.tensor(0.7, device=DEVICE)
    ours = _run(ops.linear_cross_entropy, hidden.to(dtype), weight.to(dtype), targets, grad)
    same = _run(reference.linear_cross_entropy_naive, hidden.to(dtype), weight.to(dtype), targets, grad)
    truth = _run(reference.linear_cross_entropy_naive, hidden.to(dtype).double(), weight.to(dtype).double(),
                 targets, grad)
    assert ours[0].shape == () and ours[0].dtype == torch.float32
    _check(ours, same, truth, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_audio_head_matches_naive_per_codebook(backend, small_chunks, dtype):
    hidden, weight, gen = _head(29, N_BOOKS * N_CLASSES, seed=3)
    targets = torch.randint(0, N_CLASSES, (29, N_BOOKS), generator=gen)
    targets[:9] = -100  # text rows: no audio label at all
    targets[torch.rand(29, N_BOOKS, generator=gen) < 0.2] = -100  # delay-pattern padding
    targets = targets.to(DEVICE)
    weights = torch.linspace(2.0, 0.5, N_BOOKS, device=DEVICE)
    grad = torch.rand(N_BOOKS, generator=gen).to(DEVICE) + 0.5  # a distinct upstream grad per codebook
    kw = {"codebook_weights": weights}
    ours = _run(ops.codebook_linear_cross_entropy, hidden.to(dtype), weight.to(dtype), targets, grad, **kw)
    same = _run(reference.codebook_linear_cross_entropy_naive, hidden.to(dtype), weight.to(dtype), targets,
                grad, **kw)
    truth = _run(reference.codebook_linear_cross_entropy_naive, hidden.to(dtype).double(),
                 weight.to(dtype).double(), targets, grad, **kw)
    assert ours[0].shape == (N_BOOKS,)
    _check(ours, same, truth, dtype)


@pytest.mark.parametrize("head", ["text", "audio"])
def test_all_ignored_gives_exact_zero_with_zero_grads(backend, head):
    hidden, weight, _ = _head(6, N_BOOKS * N_CLASSES, seed=1)
    if head == "text":
        fn, targets = ops.linear_cross_entropy, torch.full((6,), -100, device=DEVICE)
    else:
        fn, targets = ops.codebook_linear_cross_entropy, torch.full((6, N_BOOKS), -100, device=DEVICE)
    loss_sum, n_valid, n_correct, d_hidden, d_weight = _run(fn, hidden, weight, targets, 1.0)
    assert not loss_sum.any() and not n_valid.any() and not n_correct.any()
    assert torch.equal(d_hidden, torch.zeros_like(d_hidden))
    assert torch.equal(d_weight, torch.zeros_like(d_weight))


def test_saved_memory_does_not_grow_with_vocab_times_tokens(backend):
    """Nothing of size tokens x vocab survives from forward to backward."""
    n_rows, vocab = 64, 128256
    hidden, weight, _ = _head(n_rows, vocab, seed=2)
    hidden.requires_grad_(True)
    targets = torch.randint(0, vocab, (n_rows,), device=DEVICE)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        loss_sum, _, _ = ops.linear_cross_entropy(hidden, weight, targets)
    assert max(saved) <= weight.numel()  # the weight itself (shared, not a copy)
    assert sum(saved) < weight.numel() + 4 * n_rows * HIDDEN
    loss_sum.backward()
