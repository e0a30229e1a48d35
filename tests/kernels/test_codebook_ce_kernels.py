"""Fused multi-codebook CE kernel (materialised logits) vs the PyTorch reference."""

import pytest
import torch

from higgs_ds import ops
from higgs_ds.ops import reference
from tests.kernels.tolerance import DEVICE, assert_no_worse_than_torch

N_BOOKS, N_CLASSES = 8, 1026


def _inputs(n_rows, ignore_frac, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_rows, N_BOOKS, N_CLASSES, generator=gen) * 3
    targets = torch.randint(0, N_CLASSES, (n_rows, N_BOOKS), generator=gen)
    targets[torch.rand(n_rows, N_BOOKS, generator=gen) < ignore_frac] = -100
    return logits.to(DEVICE), targets.to(DEVICE)


def _run(fn, logits, targets, weights, grad_loss):
    logits = logits.detach().clone().requires_grad_(True)
    loss_sum, n_valid, n_correct = fn(logits, targets, weights)
    (loss_sum * grad_loss).sum().backward()
    return loss_sum, n_valid, n_correct, logits.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weighted", [False, True])
def test_codebook_ce_matches_reference(triton_backend, dtype, weighted):
    logits, targets = _inputs(37, ignore_frac=0.3)
    weights = torch.linspace(0.5, 2.0, N_BOOKS, device=DEVICE) if weighted else None
    grad_loss = torch.rand(N_BOOKS, device=DEVICE) + 0.5  # distinct per codebook
    ours = _run(ops.codebook_cross_entropy, logits.to(dtype), targets, weights, grad_loss)
    same = _run(reference.codebook_cross_entropy, logits.to(dtype), targets, weights, grad_loss)
    truth = _run(reference.codebook_cross_entropy, logits.to(dtype).double(), targets, weights, grad_loss)
    assert ours[0].dtype == torch.float32 and ours[3].dtype == dtype
    assert_no_worse_than_torch(ours[0], same[0], truth[0], dtype, "loss_sum")
    assert_no_worse_than_torch(ours[3], same[3], truth[3], dtype, "grad")
    torch.testing.assert_close(ours[1], same[1], rtol=0, atol=0)  # counts are exact
    torch.testing.assert_close(ours[2], same[2], rtol=0, atol=0)


@pytest.mark.parametrize("n_rows", [0, 5])
def test_all_ignored_gives_exact_zero_without_nan(triton_backend, n_rows):
    logits, targets = _inputs(n_rows, ignore_frac=1.0)
    loss_sum, n_valid, n_correct, grad = _run(ops.codebook_cross_entropy, logits, targets, None,
                                              torch.ones(N_BOOKS, device=DEVICE))
    assert loss_sum.shape == (N_BOOKS,) and loss_sum.requires_grad
    assert torch.equal(loss_sum, torch.zeros_like(loss_sum))
    assert not n_valid.any() and not n_correct.any()
    assert torch.equal(grad, torch.zeros_like(grad))


def test_accuracy_counts_the_first_maximum_like_argmax(triton_backend):
    logits = torch.zeros(2, N_BOOKS, N_CLASSES, device=DEVICE)
    logits[:, :, 700] = 1.0  # a tie between classes 700 and 1000 (1000 is in another class block)
    logits[:, :, 1000] = 1.0
    targets = torch.full((2, N_BOOKS), 1000, device=DEVICE)
    targets[0] = 700
    _, n_valid, n_correct = ops.codebook_cross_entropy(logits, targets)
    assert n_valid.tolist() == [2.0] * N_BOOKS and n_correct.tolist() == [1.0] * N_BOOKS
