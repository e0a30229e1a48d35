"""The one dispatch point for the fused ops: Triton kernels on CUDA, PyTorch references elsewhere.

`set_backend("auto" | "torch" | "triton")` selects the implementation; "auto" uses Triton when the
tensors live on a CUDA device (or when TRITON_INTERPRET=1 is set and the backend was forced).
The model and the training loop call only these functions.
"""

from __future__ import annotations

import torch

from higgs_ds.ops import reference

_BACKENDS = ("auto", "torch", "triton")
_backend = "auto"


def set_backend(name: str) -> None:
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}; choose one of {_BACKENDS}")
    _backend = name


def get_backend() -> str:
    return _backend


def _use_triton(t: torch.Tensor) -> bool:
    if _backend == "torch":
        return False
    if _backend == "triton":
        return True
    return t.is_cuda


def routed_ffn(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp):
    """Residual + routed SwiGLU FFN; see `reference.routed_ffn`."""
    return reference.routed_ffn(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp)


def linear_cross_entropy(hidden, weight, targets):
    """Fused text head + CE; see `reference.linear_cross_entropy`."""
    return reference.linear_cross_entropy(hidden, weight, targets)


def codebook_linear_cross_entropy(hidden, weight, targets):
    """Fused audio head + per-codebook CE; see `reference.codebook_linear_cross_entropy`."""
    return reference.codebook_linear_cross_entropy(hidden, weight, targets)


def codebook_cross_entropy(logits, targets):
    """Per-codebook CE on materialised logits; see `reference.codebook_cross_entropy`."""
    return reference.codebook_cross_entropy(logits, targets)
