"""The one dispatch point for the fused ops: Triton kernels on CUDA, PyTorch references elsewhere.

`set_backend("auto" | "torch" | "triton")` selects the implementation; "auto" uses Triton when the
tensors live on a CUDA device (or when TRITON_INTERPRET=1 is set and the backend was forced).
The model and the training loop call only these functions.
"""

from __future__ import annotations

import torch
from torch import nn

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


def uses_triton(device: torch.device | str) -> bool:
    """Whether ops on tensors of `device` take the Triton path (the caller may then need ZeRO-3 to
    gather weights the kernels read directly; see `higgs_ds.train.build`)."""
    if _backend == "torch":
        return False
    return _backend == "triton" or torch.device(device).type == "cuda"


def _use_triton(t: torch.Tensor) -> bool:
    return uses_triton(t.device)


def _fused_mlp_weights(norm: nn.Module, mlp: nn.Module, dtype: torch.dtype):
    """(norm weight, eps, gate, up, down) of a LlamaRMSNorm + bias-free SiLU LlamaMLP, or None.

    Only a plain nn.Linear is fully described by its weight: a wrapped linear (e.g. a LoRA adapter)
    must be called as a module, so its MLP gets None and takes the reference path."""
    linears = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    act = type(getattr(mlp, "act_fn", None))
    if not (issubclass(act, nn.SiLU) or act.__name__ == "SiLUActivation") or any(
        type(lin) is not nn.Linear or lin.bias is not None for lin in linears
    ):
        return None
    return (norm.weight.to(dtype), norm.variance_epsilon, *(lin.weight.to(dtype) for lin in linears))


def routed_ffn(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp):
    """`hidden + mlp_e(norm_e(hidden))` with e = text or audio per token; see `reference.routed_ffn`.

    The Triton path reads the modules' weights directly; under ZeRO-3 the training code marks the
    decoder layer as a leaf module so that all its parameters are gathered on entry.
    """
    if not _use_triton(hidden):
        return reference.routed_ffn(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp)
    text = _fused_mlp_weights(text_norm, text_mlp, hidden.dtype)
    audio = _fused_mlp_weights(audio_norm, audio_mlp, hidden.dtype)
    if text is None or audio is None:
        return reference.routed_ffn(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp)
    from higgs_ds.kernels.routed_ffn import routed_swiglu_ffn

    flat = hidden.reshape(-1, hidden.shape[-1])
    out = routed_swiglu_ffn(flat, audio_mask.reshape(-1), text[0], audio[0], text[1], audio[1],
                            *text[2:], *audio[2:])
    return out.view_as(hidden)


def linear_cross_entropy(hidden, weight, targets):
    """Fused text head + CE: fp32 0-dim (loss_sum, n_valid, n_correct); see `reference.linear_cross_entropy`."""
    if _use_triton(hidden):
        from higgs_ds.kernels.fused_head_ce import linear_cross_entropy as fused

        return fused(hidden, weight, targets)
    return reference.linear_cross_entropy(hidden, weight, targets)


def codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights=None):
    """Fused audio head + per-codebook CE: fp32 [K] (loss_sum, n_valid, n_correct)."""
    if _use_triton(hidden):
        from higgs_ds.kernels.fused_head_ce import codebook_linear_cross_entropy as fused

        return fused(hidden, weight, targets, codebook_weights)
    return reference.codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights)


def codebook_cross_entropy(logits, targets, codebook_weights=None):
    """Per-codebook CE on materialised logits [N, K, C]: fp32 [K] (loss_sum, n_valid, n_correct)."""
    if _use_triton(logits):
        from higgs_ds.kernels.codebook_ce import codebook_cross_entropy as fused

        return fused(logits, targets, codebook_weights)
    return reference.codebook_cross_entropy(logits, targets, codebook_weights)
