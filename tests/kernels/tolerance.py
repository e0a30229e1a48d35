"""Shared test helpers: device choice and the CCE-style "no worse than torch" tolerance rule."""

import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Absolute slack on top of torch's own error, relative to the tensor's scale: about two ulps of its
# largest value for 16-bit types (a fused kernel rounds at different points than torch's op chain).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
# The interpreter stores bf16 by truncation (round toward zero), whose error bound is twice that of
# torch's round-to-nearest, and every truncated store feeds later sums; a GPU rounds to nearest like
# torch. fp16 stores round to nearest in the interpreter too, so fp16 checks the same kernel math at
# 16-bit storage with the strict rule.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if _INTERPRETED:
    TOLERANCE[torch.bfloat16] = 3.2e-2


def assert_no_worse_than_torch(ours, torch_same_dtype, truth, dtype, name=""):
    """|ours - truth| <= r * |torch_same_dtype - truth| + tol * max|truth|, elementwise.

    r = 1, except 2 for bf16 under the interpreter (truncating stores, see above).
    """
    ratio = 2.0 if (_INTERPRETED and dtype == torch.bfloat16) else 1.0
    truth = truth.double()
    ours_err = (ours.double() - truth).abs()
    torch_err = (torch_same_dtype.double() - truth).abs()
    slack = TOLERANCE[dtype] * max(truth.abs().max().item(), 1.0)
    assert torch.isfinite(ours.double()).all(), f"{name}: non-finite values"
    excess = (ours_err - ratio * torch_err - slack).max().item() if ours_err.numel() else 0.0
    assert excess <= 0, f"{name}: error exceeds {ratio}x torch's by {excess:.3g} (slack {slack:.3g})"
